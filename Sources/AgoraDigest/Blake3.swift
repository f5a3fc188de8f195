#if arch(x86_64)
import AgoraDigestAVX2
import AgoraDigestAVX512
import CIntrinsics
#endif
#if canImport(Glibc)
import Glibc
#endif

/// BLAKE3 (the hash mode of the BLAKE3 specification, 32-byte output): the update envelope's payload
/// digest. Its tree lets many 1 KiB chunks be hashed at once: AVX-512 does 16 at a time (`Blake3AVX512`),
/// AVX2 8 at a time (`Blake3AVX2`); elsewhere the portable code below runs one compression at a time. Digests equal
/// `b3sum`'s (checked in the tests, for every kernel).
public enum Blake3 {
  static let chunkLength = 1024
  static let chunkStart: UInt32 = 1, chunkEnd: UInt32 = 2, parent: UInt32 = 4, root: UInt32 = 8
  static let iv: SIMD8<UInt32> = [0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A, 0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19]

  /// The code that compresses many chunks at once.
  public enum Kernel: String, Sendable, CaseIterable {
    case avx512, avx2, portable
  }

  /// The fastest kernel this CPU and OS run: AVX-512F or AVX2 (CPUID leaf 7) that the kernel also saves the
  /// registers of (Linux lists `avx512f`/`avx2` in /proc/cpuinfo only then; XGETBV, the direct test, is a
  /// macro Swift cannot call). `AGORA_PORTABLE_DIGEST=1` chooses the portable code.
  public static let best: Kernel = {
    #if arch(x86_64) && os(Linux)
    var a: UInt32 = 0, b: UInt32 = 0, c: UInt32 = 0, d: UInt32 = 0
    guard getenv("AGORA_PORTABLE_DIGEST") == nil else { return .portable }
    guard __get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 else { return .portable }
    guard let f = fopen("/proc/cpuinfo", "r") else { return .portable }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 8192)
    while fgets(&line, Int32(line.count), f) != nil {
      let text = String(cString: line)
      guard text.hasPrefix("flags") else { continue }
      let flags = Set(text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }))
      if b & (1 << 16) != 0 && flags.contains("avx512f") { return .avx512 }
      if b & (1 << 5) != 0 && flags.contains("avx2") { return .avx2 }
      return .portable
    }
    return .portable
    #else
    return .portable
    #endif
  }()

  /// Whether a kernel runs on this machine (the portable one always does).
  public static func runs(_ k: Kernel) -> Bool {
    switch k {
    case .portable: return true
    case .avx2: return best != .portable
    case .avx512: return best == .avx512
    }
  }

  /// The 32-byte BLAKE3 hash of `data`.
  public static func hash(_ data: UnsafeRawBufferPointer) -> [UInt8] {
    let h = Blake3Hasher()
    h.update(data)
    return h.finish()
  }

  public static func hash(_ data: [UInt8]) -> [UInt8] { data.withUnsafeBytes { hash($0) } }

  /// Chaining values of `lanes` inputs of `blocks` whole 64-byte blocks, input i at `base + i·stride`,
  /// written one after another (32 bytes each) to `out`; input i has counter `counter + i` if
  /// `incrementCounter`. In-place use is allowed when `out` never runs ahead of the inputs still to read
  /// (the parent levels write CV i over input i/2).
  static func hashMany(base: UnsafeRawPointer, stride: Int, count: Int, blocks: Int, counter: UInt64, incrementCounter: Bool,
                       flags: UInt32, flagsStart: UInt32, flagsEnd: UInt32, out: UnsafeMutableRawPointer, kernel: Kernel = best) {
    var done = 0
    #if arch(x86_64)
    if kernel != .portable {
      let width = kernel == .avx512 ? 16 : 8
      while done < count {
        let lanes = min(width, count - done), at = counter &+ (incrementCounter ? UInt64(done) : 0)
        if kernel == .avx512 {
          Blake3AVX512.hash(base: base + done * stride, stride: stride, lanes: lanes, blocks: blocks, counter: at, incrementCounter: incrementCounter,
                            flags: flags, flagsStart: flagsStart, flagsEnd: flagsEnd, out: out + 32 * done)
        } else {
          Blake3AVX2.hash(base: base + done * stride, stride: stride, lanes: lanes, blocks: blocks, counter: at, incrementCounter: incrementCounter,
                          flags: flags, flagsStart: flagsStart, flagsEnd: flagsEnd, out: out + 32 * done)
        }
        done += lanes
      }
      return
    }
    #endif
    withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 16) { words in
      while done < count {
        var cv = iv
        let input = base + done * stride
        for block in 0..<blocks {
          for w in 0..<16 { words[w] = UInt32(littleEndian: input.loadUnaligned(fromByteOffset: 64 * block + 4 * w, as: UInt32.self)) }
          var f = flags
          if block == 0 { f |= flagsStart }
          if block == blocks - 1 { f |= flagsEnd }
          cv = compress(cv, words.baseAddress!, counter: counter &+ (incrementCounter ? UInt64(done) : 0), blockLength: 64, flags: f).lowHalf
        }
        for w in 0..<8 { (out + 32 * done + 4 * w).storeBytes(of: cv[w].littleEndian, as: UInt32.self) }
        done += 1
      }
    }
  }

  @inline(__always) static func g(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32, _ d: inout UInt32, _ x: UInt32, _ y: UInt32) {
    a = a &+ b &+ x
    d = (d ^ a).rotatedRight(16)
    c = c &+ d
    b = (b ^ c).rotatedRight(12)
    a = a &+ b &+ y
    d = (d ^ a).rotatedRight(8)
    c = c &+ d
    b = (b ^ c).rotatedRight(7)
  }

  /// The compression function: all 16 output words (the first 8 are the next chaining value).
  static func compress(_ cv: SIMD8<UInt32>, _ m: UnsafePointer<UInt32>, counter: UInt64, blockLength: UInt32, flags: UInt32) -> SIMD16<UInt32> {
    var v0 = cv[0], v1 = cv[1], v2 = cv[2], v3 = cv[3], v4 = cv[4], v5 = cv[5], v6 = cv[6], v7 = cv[7]
    var v8 = iv[0], v9 = iv[1], v10 = iv[2], v11 = iv[3]
    var v12 = UInt32(truncatingIfNeeded: counter), v13 = UInt32(truncatingIfNeeded: counter >> 32), v14 = blockLength, v15 = flags
    // round 0
    g(&v0, &v4, &v8, &v12, m[0], m[1])
    g(&v1, &v5, &v9, &v13, m[2], m[3])
    g(&v2, &v6, &v10, &v14, m[4], m[5])
    g(&v3, &v7, &v11, &v15, m[6], m[7])
    g(&v0, &v5, &v10, &v15, m[8], m[9])
    g(&v1, &v6, &v11, &v12, m[10], m[11])
    g(&v2, &v7, &v8, &v13, m[12], m[13])
    g(&v3, &v4, &v9, &v14, m[14], m[15])
    // round 1
    g(&v0, &v4, &v8, &v12, m[2], m[6])
    g(&v1, &v5, &v9, &v13, m[3], m[10])
    g(&v2, &v6, &v10, &v14, m[7], m[0])
    g(&v3, &v7, &v11, &v15, m[4], m[13])
    g(&v0, &v5, &v10, &v15, m[1], m[11])
    g(&v1, &v6, &v11, &v12, m[12], m[5])
    g(&v2, &v7, &v8, &v13, m[9], m[14])
    g(&v3, &v4, &v9, &v14, m[15], m[8])
    // round 2
    g(&v0, &v4, &v8, &v12, m[3], m[4])
    g(&v1, &v5, &v9, &v13, m[10], m[12])
    g(&v2, &v6, &v10, &v14, m[13], m[2])
    g(&v3, &v7, &v11, &v15, m[7], m[14])
    g(&v0, &v5, &v10, &v15, m[6], m[5])
    g(&v1, &v6, &v11, &v12, m[9], m[0])
    g(&v2, &v7, &v8, &v13, m[11], m[15])
    g(&v3, &v4, &v9, &v14, m[8], m[1])
    // round 3
    g(&v0, &v4, &v8, &v12, m[10], m[7])
    g(&v1, &v5, &v9, &v13, m[12], m[9])
    g(&v2, &v6, &v10, &v14, m[14], m[3])
    g(&v3, &v7, &v11, &v15, m[13], m[15])
    g(&v0, &v5, &v10, &v15, m[4], m[0])
    g(&v1, &v6, &v11, &v12, m[11], m[2])
    g(&v2, &v7, &v8, &v13, m[5], m[8])
    g(&v3, &v4, &v9, &v14, m[1], m[6])
    // round 4
    g(&v0, &v4, &v8, &v12, m[12], m[13])
    g(&v1, &v5, &v9, &v13, m[9], m[11])
    g(&v2, &v6, &v10, &v14, m[15], m[10])
    g(&v3, &v7, &v11, &v15, m[14], m[8])
    g(&v0, &v5, &v10, &v15, m[7], m[2])
    g(&v1, &v6, &v11, &v12, m[5], m[3])
    g(&v2, &v7, &v8, &v13, m[0], m[1])
    g(&v3, &v4, &v9, &v14, m[6], m[4])
    // round 5
    g(&v0, &v4, &v8, &v12, m[9], m[14])
    g(&v1, &v5, &v9, &v13, m[11], m[5])
    g(&v2, &v6, &v10, &v14, m[8], m[12])
    g(&v3, &v7, &v11, &v15, m[15], m[1])
    g(&v0, &v5, &v10, &v15, m[13], m[3])
    g(&v1, &v6, &v11, &v12, m[0], m[10])
    g(&v2, &v7, &v8, &v13, m[2], m[6])
    g(&v3, &v4, &v9, &v14, m[4], m[7])
    // round 6
    g(&v0, &v4, &v8, &v12, m[11], m[15])
    g(&v1, &v5, &v9, &v13, m[5], m[0])
    g(&v2, &v6, &v10, &v14, m[1], m[9])
    g(&v3, &v7, &v11, &v15, m[8], m[6])
    g(&v0, &v5, &v10, &v15, m[14], m[10])
    g(&v1, &v6, &v11, &v12, m[2], m[12])
    g(&v2, &v7, &v8, &v13, m[3], m[4])
    g(&v3, &v4, &v9, &v14, m[7], m[13])
    return [v0 ^ v8, v1 ^ v9, v2 ^ v10, v3 ^ v11, v4 ^ v12, v5 ^ v13, v6 ^ v14, v7 ^ v15,
            v8 ^ cv[0], v9 ^ cv[1], v10 ^ cv[2], v11 ^ cv[3], v12 ^ cv[4], v13 ^ cv[5], v14 ^ cv[6], v15 ^ cv[7]]
  }
}

extension UInt32 {
  @inline(__always) func rotatedRight(_ n: UInt32) -> UInt32 { (self >> n) | (self << (32 - n)) }
}

/// A compression not yet done: it gives a chaining value, or, with the ROOT flag, the hash.
struct Blake3Output {
  var cv: SIMD8<UInt32>
  var block: SIMD16<UInt32>
  var counter: UInt64
  var blockLength: UInt32
  var flags: UInt32

  func run(extraFlags: UInt32) -> SIMD16<UInt32> {
    var b = block
    return withUnsafeBytes(of: &b) { Blake3.compress(cv, $0.baseAddress!.assumingMemoryBound(to: UInt32.self), counter: counter, blockLength: blockLength, flags: flags | extraFlags) }
  }

  var chainingValue: SIMD8<UInt32> { run(extraFlags: 0).lowHalf }

  static func parent(_ left: SIMD8<UInt32>, _ right: SIMD8<UInt32>) -> Blake3Output {
    Blake3Output(cv: Blake3.iv, block: SIMD16(lowHalf: left, highHalf: right), counter: 0, blockLength: 64, flags: Blake3.parent)
  }
}

/// BLAKE3 fed in pieces of any size. Whole 1 KiB chunks are hashed as power-of-two subtrees, many chunks at
/// once; the chaining values wait on a stack and merge into parents as the specification's tree requires
/// (left subtrees complete, merged lazily so the last one can still become the root).
public final class Blake3Hasher {
  var stack: [SIMD8<UInt32>] = []
  /// Chunks whose chaining values are on the stack (as leaves of its subtrees).
  var chunks: UInt64 = 0
  /// The chunk not yet hashed: it may turn out to be the only one (then it is the root).
  let pending = UnsafeMutableRawBufferPointer.allocate(byteCount: Blake3.chunkLength, alignment: 64)
  var pendingCount = 0
  var total: UInt64 = 0
  /// Chaining values of a subtree's leaves and levels: up to `maxSubtree` chunks at once.
  static let maxSubtree = 1024
  let cvs = UnsafeMutableRawBufferPointer.allocate(byteCount: 32 * maxSubtree, alignment: 64)
  let kernel: Blake3.Kernel

  /// Everything fed so far, as a value: taken before a piece of input that may have to be taken back.
  public struct State {
    var stack: [SIMD8<UInt32>]
    var chunks: UInt64
    var pending: [UInt8]
    var total: UInt64
  }

  public var state: State {
    get { State(stack: stack, chunks: chunks, pending: Array(pending[0..<pendingCount]), total: total) }
    set {
      stack = newValue.stack
      chunks = newValue.chunks
      total = newValue.total
      pendingCount = newValue.pending.count
      newValue.pending.withUnsafeBytes { pending.copyMemory(from: $0) }
    }
  }

  /// `kernel` must run here (`Blake3.runs`); the default is the fastest that does.
  public init(kernel: Blake3.Kernel = Blake3.best) {
    precondition(Blake3.runs(kernel), "BLAKE3 kernel \(kernel) does not run on this CPU")
    self.kernel = kernel
  }

  deinit {
    pending.deallocate()
    cvs.deallocate()
  }

  public func update(_ data: [UInt8]) { data.withUnsafeBytes { update($0) } }

  public func update(_ data: UnsafeRawBufferPointer) {
    guard data.count > 0 else { return }
    total += UInt64(data.count)
    var rest = data
    if pendingCount > 0 || total <= UInt64(Blake3.chunkLength) {
      let take = min(Blake3.chunkLength - pendingCount, rest.count)
      UnsafeMutableRawBufferPointer(rebasing: pending[pendingCount..<(pendingCount + take)]).copyMemory(from: UnsafeRawBufferPointer(rebasing: rest[0..<take]))
      pendingCount += take
      rest = UnsafeRawBufferPointer(rebasing: rest[take...])
      // A full chunk with more input known to exist is not the root: hash it.
      guard pendingCount == Blake3.chunkLength, total > UInt64(Blake3.chunkLength) else { return }
      subtree(UnsafeRawBufferPointer(pending), chunks: 1)
      pendingCount = 0
    }
    // More than one chunk exists from here on, so no whole chunk is the root.
    while rest.count >= Blake3.chunkLength {
      var k = min(Blake3Hasher.maxSubtree, rest.count / Blake3.chunkLength)
      k = 1 << (Int.bitWidth - 1 - k.leadingZeroBitCount)              // a power of two…
      if chunks > 0 { k = min(k, 1 << chunks.trailingZeroBitCount) }    // …aligned to where it starts
      subtree(UnsafeRawBufferPointer(rebasing: rest[0..<(k * Blake3.chunkLength)]), chunks: k)
      rest = UnsafeRawBufferPointer(rebasing: rest[(k * Blake3.chunkLength)...])
    }
    if rest.count > 0 {
      UnsafeMutableRawBufferPointer(rebasing: pending[0..<rest.count]).copyMemory(from: rest)
      pendingCount = rest.count
    }
  }

  /// Hashes `k` (a power of two) whole chunks starting at chunk `chunks` and pushes the subtree's two
  /// halves (its root is left for the lazy merge, in case it is the whole tree's root).
  func subtree(_ data: UnsafeRawBufferPointer, chunks k: Int) {
    let out = cvs.baseAddress!
    Blake3.hashMany(base: data.baseAddress!, stride: Blake3.chunkLength, count: k, blocks: 16, counter: chunks, incrementCounter: true,
                    flags: 0, flagsStart: Blake3.chunkStart, flagsEnd: Blake3.chunkEnd, out: out, kernel: kernel)
    var level = k
    while level > 2 {
      Blake3.hashMany(base: out, stride: 64, count: level / 2, blocks: 1, counter: 0, incrementCounter: false,
                      flags: Blake3.parent, flagsStart: 0, flagsEnd: 0, out: out, kernel: kernel)
      level /= 2
    }
    if level == 1 {
      push(cv(out, 0), chunks)
    } else {
      push(cv(out, 0), chunks)
      push(cv(out, 1), chunks + UInt64(k / 2))
    }
    chunks += UInt64(k)
  }

  func cv(_ p: UnsafeMutableRawPointer, _ i: Int) -> SIMD8<UInt32> {
    var v = SIMD8<UInt32>()
    for w in 0..<8 { v[w] = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 32 * i + 4 * w, as: UInt32.self)) }
    return v
  }

  /// Pushes the chaining value of a subtree that starts at chunk `start`, first merging what the subtrees
  /// before it complete: the stack keeps one entry per 1 bit of `start`.
  func push(_ cv: SIMD8<UInt32>, _ start: UInt64) {
    merge(to: start.nonzeroBitCount)
    stack.append(cv)
  }

  func merge(to count: Int) {
    while stack.count > count {
      let right = stack.removeLast(), left = stack.removeLast()
      stack.append(Blake3Output.parent(left, right).chainingValue)
    }
  }

  /// The 32-byte hash of everything fed; the hasher starts over afterwards.
  public func finish() -> [UInt8] {
    var output: Blake3Output
    var remaining: Int
    if pendingCount > 0 || stack.isEmpty {
      merge(to: chunks.nonzeroBitCount)
      output = lastChunk()
      remaining = stack.count
    } else {
      output = Blake3Output.parent(stack[stack.count - 2], stack[stack.count - 1])
      remaining = stack.count - 2
    }
    while remaining > 0 {
      output = Blake3Output.parent(stack[remaining - 1], output.chainingValue)
      remaining -= 1
    }
    let words = output.run(extraFlags: Blake3.root)
    var digest = [UInt8](repeating: 0, count: 32)
    for i in 0..<32 { digest[i] = UInt8(truncatingIfNeeded: words[i / 4] >> (8 * UInt32(i % 4))) }
    stack.removeAll(keepingCapacity: true)
    chunks = 0
    pendingCount = 0
    total = 0
    return digest
  }

  /// The pending chunk's last compression (the blocks before it chained in).
  func lastChunk() -> Blake3Output {
    let n = pendingCount
    let blocks = max(1, (n + 63) / 64)
    var cv = Blake3.iv
    var block = SIMD16<UInt32>()
    for b in 0..<blocks {
      let len = min(64, n - 64 * b)
      var bytes = [UInt8](repeating: 0, count: 64)
      for i in 0..<len { bytes[i] = pending[64 * b + i] }
      for w in 0..<16 {
        block[w] = UInt32(bytes[4 * w]) | UInt32(bytes[4 * w + 1]) << 8 | UInt32(bytes[4 * w + 2]) << 16 | UInt32(bytes[4 * w + 3]) << 24
      }
      let flags = (b == 0 ? Blake3.chunkStart : 0) | (b == blocks - 1 ? Blake3.chunkEnd : 0)
      let out = Blake3Output(cv: cv, block: block, counter: chunks, blockLength: UInt32(len), flags: flags)
      if b == blocks - 1 { return out }
      cv = out.chainingValue
    }
    fatalError("unreachable")
  }
}
