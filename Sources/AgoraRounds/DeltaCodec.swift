import AgoraStorage
import AgoraTensor
import AgoraWire
import Foundation

/// The payload of an update (and of a version patch): a vector Δ as a byte stream.
///
///     header  = "AGDQ" ‖ format (u8: 0 fp32, 1 int8, 2 int4, 3 fp4) ‖ 3 zero octets ‖ count (u64)
///     fp32    = count little-endian binary32 values
///     int8    = for each block of 256 values (the last may be shorter):
///               scale (binary32, finite, ≥ 0) ‖ one int8 per value (x ≈ scale · q, q ∈ −127…127)
///     int4, fp4 = for each block of 256 values (the last may be shorter):
///               scale (binary32, finite, ≥ 0) ‖ one 4-bit code per value, two per octet (value 2j in octet
///               j's low nibble, 2j + 1 in its high nibble; an odd last block pads a zero nibble): a sign bit
///               and a magnitude index m (0–7); x ≈ ±scale · m (int4) or ±scale · {0, 2⁻⁶, 2⁻⁵ … 2⁰}[m]
///               (fp4, FP4 E3M0 as Streaming DiLoCo sends outer gradients)
///
/// int8 is about 3.9× smaller than fp32 (INTELLECT-1 uses the same idea), int4 and fp4 about 7.8×. A node keeps its quantisation
/// error and adds it to its next Δ (error feedback), so nothing is lost over rounds, only delayed. Version
/// patches are rounded stochastically instead (unbiased, no state to keep on the coordinator).
///
/// Blocks have a fixed stride, so encoding and decoding run in parallel over blocks; the arithmetic of each
/// value is fixed, so every process that decodes the same bytes gets bit-identical floats.
public enum DeltaFormat: UInt8, Sendable, CaseIterable {
  case fp32 = 0, int8 = 1, int4 = 2, fp4 = 3
  public var name: String { ["fp32", "int8", "int4", "fp4"][Int(rawValue)] }
  /// The 4-bit code of int4 and fp4 (nil for fp32 and int8).
  public var nibble: DeltaKernels.Nibble? { self == .int4 ? .int4 : self == .fp4 ? .fp4 : nil }
  /// Quantised formats: a node keeps what rounding lost (error feedback).
  public var quantised: Bool { self != .fp32 }
}

/// Why a payload was refused. Nothing is written to the target for a refused payload's header; a value
/// error stops decoding where it is found (callers decode into scratch or validate first).
public enum DeltaError: Error, Equatable, CustomStringConvertible {
  case header(String)
  case length(got: Int, expected: Int)
  case nonFinite(index: Int)
  /// The second moments that follow an update (`BlockMoments`) are missing or malformed.
  case moments(String)
  public var description: String {
    switch self {
    case .header(let s): return "update payload header: \(s)"
    case .length(let g, let e): return "update payload is \(g) bytes, its header implies \(e)"
    case .nonFinite(let i): return "update value \(i) (or its block's scale) is NaN or infinite"
    case .moments(let s): return "update's second moments: \(s)"
    }
  }
}

public enum DeltaCodec {
  public static let magic: [UInt8] = Array("AGDQ".utf8)
  public static let block = 256
  public static let headerBytes = 16
  static let blockBytes = 4 + block

  public static func encodedSize(count: Int, format: DeltaFormat) -> Int {
    switch format {
    case .fp32: return headerBytes + 4 * count
    case .int8: return headerBytes + count + 4 * ((count + block - 1) / block)
    case .int4, .fp4: return headerBytes + nibbleBytes(blocks: 0..<((count + block - 1) / block), count: count)
    }
  }

  /// Octets of the 4-bit blocks `blocks` of a payload of `count` values.
  static func nibbleBytes(blocks: Range<Int>, count: Int) -> Int {
    guard !blocks.isEmpty else { return 0 }
    let last = min(block, count - (blocks.upperBound - 1) * block)
    return (blocks.count - 1) * (4 + block / 2) + 4 + (last + 1) / 2
  }

  /// How values are rounded to int8.
  public enum Rounding: Sendable {
    /// To nearest; with `errorFeedback` the lost part is added to the buffer's next use.
    case nearest
    /// Up or down with probability given by the remainder, from a counter-based generator keyed by `seed`:
    /// unbiased, and the same seed gives the same bytes.
    case stochastic(seed: UInt64)
  }

  /// Encodes `delta` (adding and updating `errorFeedback` for int8 when given).
  public static func encode(_ delta: UnsafeBufferPointer<Float>, format: DeltaFormat, errorFeedback: UnsafeMutableBufferPointer<Float>? = nil,
                            rounding: Rounding = .nearest) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: encodedSize(count: delta.count, format: format))
    out.withUnsafeMutableBytes { _ = encode(delta, format: format, into: $0, errorFeedback: errorFeedback, rounding: rounding) }
    return out
  }

  /// Encodes into `out` (at least `encodedSize` bytes); returns the bytes written.
  @discardableResult
  public static func encode(_ delta: UnsafeBufferPointer<Float>, format: DeltaFormat, into out: UnsafeMutableRawBufferPointer,
                            errorFeedback: UnsafeMutableBufferPointer<Float>? = nil, rounding: Rounding = .nearest) -> Int {
    let n = delta.count
    let size = encodedSize(count: n, format: format)
    precondition(out.count >= size, "DeltaCodec.encode: output buffer too small")
    let o = out.baseAddress!
    header(count: n, format: format).withUnsafeBytes { o.copyMemory(from: $0.baseAddress!, byteCount: headerBytes) }
    let body = o + headerBytes
    let src = delta.baseAddress!
    switch format {
    case .fp32:
      Parallel.forRange(n, minChunk: 1 << 16) { s, e in
        for i in s..<e { body.storeBytes(of: src[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
      }
    case .int8:
      encodeInt8(delta, values: 0..<n, into: body, errorFeedback: errorFeedback, rounding: rounding, threads: Parallel.threads)
    case .int4, .fp4:
      let kind = format.nibble!
      let fb = errorFeedback?.baseAddress
      Parallel.forRange((n + block - 1) / block, minChunk: 256) { bs, be in
        let vals = UnsafeMutablePointer<Float>.allocate(capacity: block)
        defer { vals.deallocate() }
        for b in bs..<be {
          let start = b * block
          let at = body + b * (4 + block / 2)
          let scale = DeltaKernels.nibbleBlock(src + start, count: min(block, n - start), kind: kind, feedback: fb.map { $0 + start },
                                               scratch: vals, into: (at + 4).assumingMemoryBound(to: UInt8.self))
          at.storeBytes(of: scale.bitPattern.littleEndian, as: UInt32.self)
        }
      }
    }
    return size
  }

  /// The 16-octet header of a payload of `count` values.
  public static func header(count: Int, format: DeltaFormat) -> [UInt8] {
    var h = magic + [format.rawValue, 0, 0, 0]
    for i in 0..<8 { h.append(UInt8(truncatingIfNeeded: UInt64(count) >> (8 * UInt64(i)))) }
    return h
  }

  /// Octets of the int8 blocks that hold `values` of a payload of `count` values.
  public static func int8Bytes(values: Range<Int>, count: Int) -> Int {
    let first = values.lowerBound / block, end = (values.upperBound + block - 1) / block
    return 4 * (end - first) + min(values.upperBound, count) - first * block
  }

  /// Writes the int8 blocks that hold `delta[values]` (bounds at multiples of `block`, or the end) compactly
  /// at `out` (at least `int8Bytes(values:count:)` octets): the octets `encode` puts at their place in the whole
  /// payload, stochastic rounding included (its generator is keyed by the value's index). A payload can so be
  /// produced slice by slice, as the coordinator does with a version patch: the header, then each slice's
  /// blocks in order. Returns the octets written.
  @discardableResult
  public static func encodeInt8(_ delta: UnsafeBufferPointer<Float>, values: Range<Int>, into out: UnsafeMutableRawPointer,
                                errorFeedback: UnsafeMutableBufferPointer<Float>? = nil, rounding: Rounding = .nearest, threads: Int = 1) -> Int {
    let n = delta.count
    precondition(values.lowerBound >= 0 && values.upperBound <= n && values.lowerBound % block == 0
                 && (values.upperBound % block == 0 || values.upperBound == n), "DeltaCodec.encodeInt8: range not block-aligned")
    let first = values.lowerBound / block, blocks = (values.upperBound + block - 1) / block - first
    let src = delta.baseAddress!
    let fb = errorFeedback?.baseAddress
    let seed: UInt64?
    switch rounding {
    case .nearest: seed = nil
    case .stochastic(let s): seed = s
    }
    Parallel.forRange(blocks, minChunk: 256, threads: threads) { bs, be in
      let vals = UnsafeMutablePointer<Float>.allocate(capacity: block)
      defer { vals.deallocate() }
      for b in (first + bs)..<(first + be) {
        let start = b * block
        let at = out + (b - first) * blockBytes
        let scale = DeltaKernels.int8Block(src + start, count: min(block, n - start), feedback: fb.map { $0 + start }, seed: seed,
                                           index: UInt64(start), scratch: vals, into: (at + 4).assumingMemoryBound(to: Int8.self))
        at.storeBytes(of: scale.bitPattern.littleEndian, as: UInt32.self)
      }
    }
    return int8Bytes(values: values, count: n)
  }

  /// Applies int8 blocks written by `encodeInt8` for `values` (of `count` in all) to `target` as `mode` says.
  public static func applyInt8(_ bytes: UnsafeRawPointer, values: Range<Int>, count: Int, into target: UnsafeMutablePointer<Float>, mode: Mode) throws {
    guard values.lowerBound >= 0, values.upperBound <= count, values.lowerBound % block == 0,
          values.upperBound % block == 0 || values.upperBound == count else {
      throw DeltaError.header("applying values \(values) of \(count) (not block-aligned or out of range)")
    }
    let first = values.lowerBound / block, end = (values.upperBound + block - 1) / block
    if let i = DeltaKernels.int8Apply(bytes, first: first, blocks: first..<end, count: count, block: block, into: target, mode: mode) {
      throw DeltaError.nonFinite(index: i)
    }
  }

  /// Octets of the blocks that hold `values` in a version patch of `format` (int8 or a 4-bit format).
  public static func patchBytes(values: Range<Int>, count: Int, format: DeltaFormat) -> Int {
    format == .int8 ? int8Bytes(values: values, count: count)
                    : nibbleBytes(blocks: (values.lowerBound / block)..<((values.upperBound + block - 1) / block), count: count)
  }

  /// Writes the blocks that hold `delta[values]` (block-aligned) compactly at `out`, as `encodeInt8` does, in
  /// int8 (with `rounding`) or a 4-bit format (to nearest, the remainder kept in `errorFeedback` when given).
  @discardableResult
  public static func encodePatch(_ delta: UnsafeBufferPointer<Float>, values: Range<Int>, format: DeltaFormat, into out: UnsafeMutableRawPointer,
                                 errorFeedback: UnsafeMutableBufferPointer<Float>? = nil, rounding: Rounding = .nearest) -> Int {
    guard let kind = format.nibble else {
      return encodeInt8(delta, values: values, into: out, errorFeedback: errorFeedback, rounding: rounding)
    }
    let n = delta.count
    precondition(values.lowerBound % block == 0 && (values.upperBound % block == 0 || values.upperBound == n), "DeltaCodec.encodePatch: range not block-aligned")
    let first = values.lowerBound / block, end = (values.upperBound + block - 1) / block
    let (src, fb) = (delta.baseAddress!, errorFeedback?.baseAddress)
    let vals = UnsafeMutablePointer<Float>.allocate(capacity: block)
    defer { vals.deallocate() }
    for b in first..<end {
      let start = b * block
      let at = out + (b - first) * (4 + block / 2)
      let scale = DeltaKernels.nibbleBlock(src + start, count: min(block, n - start), kind: kind, feedback: fb.map { $0 + start },
                                           scratch: vals, into: (at + 4).assumingMemoryBound(to: UInt8.self))
      at.storeBytes(of: scale.bitPattern.littleEndian, as: UInt32.self)
    }
    return patchBytes(values: values, count: n, format: format)
  }

  /// Applies blocks written by `encodePatch` for `values` (of `count` in all) to `target` as `mode` says.
  public static func applyPatch(_ bytes: UnsafeRawPointer, values: Range<Int>, count: Int, format: DeltaFormat, into target: UnsafeMutablePointer<Float>,
                                mode: Mode) throws {
    guard let kind = format.nibble else { return try applyInt8(bytes, values: values, count: count, into: target, mode: mode) }
    guard values.lowerBound >= 0, values.upperBound <= count, values.lowerBound % block == 0, values.upperBound % block == 0 || values.upperBound == count else {
      throw DeltaError.header("applying values \(values) of \(count) (not block-aligned or out of range)")
    }
    let first = values.lowerBound / block, end = (values.upperBound + block - 1) / block
    if let i = DeltaKernels.nibbleApply(bytes, kind: kind, first: first, blocks: first..<end, count: count, block: block, into: target, mode: mode) {
      throw DeltaError.nonFinite(index: i)
    }
  }

  /// What decoding does with each value x at index i of the target: store, subtract (applying a version
  /// patch: θ ← θ − step) or add w·x (folding an update into the weighted sum).
  public typealias Mode = DeltaKernels.Apply

  /// Reads and checks a payload's header against the expected value count and the payload's length.
  /// `checkLength: false` reads the format from the first 16 octets alone.
  public static func header(_ payload: UnsafeRawBufferPointer, count expected: Int, checkLength: Bool = true) throws -> DeltaFormat {
    guard payload.count >= headerBytes else { throw DeltaError.length(got: payload.count, expected: headerBytes) }
    guard Array(payload[0..<4]) == magic else { throw DeltaError.header("bad magic") }
    guard let f = DeltaFormat(rawValue: payload[4]) else { throw DeltaError.header("unknown format \(payload[4])") }
    guard payload[5] == 0, payload[6] == 0, payload[7] == 0 else { throw DeltaError.header("reserved octets are not zero") }
    let n = UInt64(littleEndian: payload.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    guard n == UInt64(expected) else { throw DeltaError.header("holds \(n) values, the model has \(expected)") }
    let size = encodedSize(count: expected, format: f)
    guard !checkLength || payload.count == size else { throw DeltaError.length(got: payload.count, expected: size) }
    return f
  }

  /// Checks a whole payload (header, length, every value finite) and returns its format and squared L2 norm,
  /// without writing anything.
  public static func validate(_ payload: UnsafeRawBufferPointer, count: Int) throws -> (DeltaFormat, Double) {
    let f = try header(payload, count: count)
    let parts = UnsafeMutableBufferPointer<Double>.allocate(capacity: Parallel.threads)
    let bad = UnsafeMutableBufferPointer<Int>.allocate(capacity: Parallel.threads)
    defer { parts.deallocate(); bad.deallocate() }
    parts.initialize(repeating: 0)
    bad.initialize(repeating: -1)
    let body = payload.baseAddress! + headerBytes
    switch f {
    case .fp32:
      Parallel.forChunks(count) { c, s, e in
        let (acc, b) = DeltaKernels.fp32SquaredNorm(body, range: s..<e)
        if let b { bad[c] = b } else { parts[c] = acc }
      }
    case .int8:
      let blocks = (count + block - 1) / block
      Parallel.forChunks(blocks) { c, bs, be in
        let (acc, b) = DeltaKernels.int8SquaredNorm(body, blocks: bs..<be, count: count, block: block)
        if let b { bad[c] = b } else { parts[c] = acc }
      }
    case .int4, .fp4:
      let blocks = (count + block - 1) / block
      Parallel.forChunks(blocks) { c, bs, be in
        let (acc, b) = DeltaKernels.nibbleSquaredNorm(body, kind: f.nibble!, blocks: bs..<be, count: count, block: block)
        if let b { bad[c] = b } else { parts[c] = acc }
      }
    }
    if let i = bad.filter({ $0 >= 0 }).min() { throw DeltaError.nonFinite(index: i) }
    return (f, parts.reduce(0, +))
  }

  /// Decodes a whole payload into `target` (which holds `count` values) according to `mode`. Call `validate`
  /// first when the payload is untrusted and the target must not be half-written.
  public static func decode(_ payload: UnsafeRawBufferPointer, into target: UnsafeMutablePointer<Float>, count: Int, mode: Mode) throws {
    let f = try header(payload, count: count)
    let body = payload.baseAddress! + headerBytes
    let bad = ManagedIndex()
    switch f {
    case .fp32:
      Parallel.forRange(count, minChunk: 1 << 16) { s, e in
        if let i = DeltaKernels.fp32Apply(body, range: s..<e, into: target, mode: mode) { bad.record(i) }
      }
    case .int8:
      let blocks = (count + block - 1) / block
      Parallel.forRange(blocks, minChunk: 256) { bs, be in
        if let i = DeltaKernels.int8Apply(body, blocks: bs..<be, count: count, block: block, into: target, mode: mode) {
          bad.record(i)
        }
      }
    case .int4, .fp4:
      let blocks = (count + block - 1) / block
      Parallel.forRange(blocks, minChunk: 256) { bs, be in
        if let i = DeltaKernels.nibbleApply(body, kind: f.nibble!, blocks: bs..<be, count: count, block: block, into: target, mode: mode) {
          bad.record(i)
        }
      }
    }
    if let i = bad.value { throw DeltaError.nonFinite(index: i) }
  }
}

/// The smallest index any thread reported (for the first bad value of a parallel decode).
final class ManagedIndex: @unchecked Sendable {
  private var v: Int? = nil
  private let lock = NSLock()
  func record(_ i: Int) { lock.lock(); v = min(v ?? i, i); lock.unlock() }
  var value: Int? { lock.lock(); defer { lock.unlock() }; return v }
}

extension DeltaCodec {
  /// Values `range` of a checked payload (in memory) into `out` (block-aligned ranges for int8).
  static func values(of payload: UnsafeRawBufferPointer, format: DeltaFormat, range: Range<Int>, count: Int, into out: UnsafeMutablePointer<Float>) throws {
    let body = payload.baseAddress! + headerBytes
    switch format {
    case .fp32:
      if let i = DeltaKernels.fp32Apply(body, range: range, into: out - range.lowerBound, mode: .store) { throw DeltaError.nonFinite(index: i) }
    case .int8:
      try applyInt8(body + (range.lowerBound / block) * blockBytes, values: range, count: count, into: out - range.lowerBound, mode: .store)
    case .int4, .fp4:
      let first = range.lowerBound / block, end = (range.upperBound + block - 1) / block
      guard range.lowerBound % block == 0, range.upperBound % block == 0 || range.upperBound == count else {
        throw DeltaError.header("reading values \(range) of \(count) (not block-aligned)")
      }
      if let i = DeltaKernels.nibbleApply(body + first * (4 + block / 2), kind: format.nibble!, first: first, blocks: first..<end, count: count, block: block,
                                          into: out - range.lowerBound, mode: .store) {
        throw DeltaError.nonFinite(index: i)
      }
    }
  }

  /// Adds a checked payload into `target` with a weight per block of `block` values (`weights[b]` for values
  /// b·256 ..< (b + 1)·256): one pass, in parallel over blocks.
  public static func add(_ payload: UnsafeRawBufferPointer, into target: UnsafeMutablePointer<Float>, count: Int, blockWeights weights: [Float]) throws {
    let f = try header(payload, count: count)
    let body = payload.baseAddress! + headerBytes
    let blocks = (count + block - 1) / block
    guard weights.count == blocks else { throw DeltaError.header("\(weights.count) block weights for \(blocks) blocks") }
    let bad = ManagedIndex()
    Parallel.forChunks(blocks) { _, bs, be in
      for b in bs..<be {
        let mode = Mode.add(weights[b])
        let i: Int?
        switch f {
        case .fp32: i = DeltaKernels.fp32Apply(body, range: (b * block)..<min(count, b * block + block), into: target, mode: mode)
        case .int8: i = DeltaKernels.int8Apply(body + b * blockBytes, first: b, blocks: b..<(b + 1), count: count, block: block, into: target, mode: mode)
        case .int4, .fp4:
          i = DeltaKernels.nibbleApply(body + b * (4 + block / 2), kind: f.nibble!, first: b, blocks: b..<(b + 1), count: count, block: block, into: target, mode: mode)
        }
        if let i { bad.record(i) }
      }
    }
    if let i = bad.value { throw DeltaError.nonFinite(index: i) }
  }

  /// ⟨a, b⟩, ‖a‖² and ‖b‖² of a checked payload `a` in memory and an int8 or 4-bit payload `b` in a file (a version patch,
  /// i.e. the last outer step), both of `count` values; `b` is read a slice at a time, so this needs two slices
  /// of memory whatever the model's size.
  public static func similarity(_ a: UnsafeRawBufferPointer, format: DeltaFormat, patchFile path: String, count: Int,
                                slice: Int = 64 * block) throws -> (dot: Double, a2: Double, b2: Double) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw DeltaError.header("cannot read \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var head = [UInt8](repeating: 0, count: headerBytes)
    do { try head.withUnsafeMutableBytes { try Posix.read(fd, path: path, at: 0, into: $0) } } catch {
      throw DeltaError.header("\(path) is shorter than a payload header (\(error))")
    }
    var st = stat()
    guard fstat(fd, &st) == 0, let pf = DeltaFormat(rawValue: head[4]), pf != .fp32, Int(st.st_size) == encodedSize(count: count, format: pf),
          Array(head[0..<4]) == magic, head[8..<16].enumerated().reduce(UInt64(0), { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }) == UInt64(count) else {
      throw DeltaError.header("\(path) is not an int8 or 4-bit payload of \(count) values")
    }
    let va = UnsafeMutablePointer<Float>.allocate(capacity: slice), vb = UnsafeMutablePointer<Float>.allocate(capacity: slice)
    let raw = UnsafeMutableRawPointer.allocate(byteCount: patchBytes(values: 0..<min(slice, count), count: count, format: pf), alignment: 64)
    defer { va.deallocate(); vb.deallocate(); raw.deallocate() }
    var dot = 0.0, a2 = 0.0, b2 = 0.0
    for start in stride(from: 0, to: count, by: slice) {
      let r = start..<min(count, start + slice)
      try values(of: a, format: format, range: r, count: count, into: va)
      let bytes = patchBytes(values: r, count: count, format: pf)
      let at = headerBytes + patchBytes(values: 0..<start, count: count, format: pf)
      do { try Posix.read(fd, path: path, at: at, into: UnsafeMutableRawBufferPointer(start: raw, count: bytes)) } catch {
        throw DeltaError.header("\(error)")
      }
      try applyPatch(raw, values: r, count: count, format: pf, into: vb - start, mode: .store)
      var d: Float = 0, x: Float = 0, y: Float = 0
      for i in 0..<r.count { d += va[i] * vb[i]; x += va[i] * va[i]; y += vb[i] * vb[i] }
      dot += Double(d); a2 += Double(x); b2 += Double(y)
    }
    return (dot, a2, b2)
  }
}
