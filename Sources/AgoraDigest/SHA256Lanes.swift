#if arch(x86_64)
import CIntrinsics
#endif

/// SHA-256 of two byte strings at once with the x86 SHA extensions.
///
/// One SHA-256 is a chain of dependent `sha256rnds2` instructions, so a single stream runs at the
/// instruction's latency (about 1.8 GB/s on this Zen 4, OpenSSL's speed too); two independent streams
/// interleaved use its throughput (measured: 2.7–3.3 GB/s for the pair). The update envelope's payload
/// digest is defined over two lanes of every chunk (`AgoraCrypto.ChunkDigest`) to make that possible. The
/// results are plain SHA-256 digests, checked against OpenSSL in the tests.
public enum SHA256Lanes {
  /// Whether this CPU has the SHA extensions (CPUID leaf 7, EBX bit 29) and this build can use them.
  public static let available: Bool = {
    #if arch(x86_64)
    var a: UInt32 = 0, b: UInt32 = 0, c: UInt32 = 0, d: UInt32 = 0
    guard __get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 else { return false }
    return b & (1 << 29) != 0
    #else
    return false
    #endif
  }()

  /// The SHA-256 digests of `x` and `y`, or nil where the SHA extensions are unavailable.
  public static func hash(_ x: UnsafeRawBufferPointer, _ y: UnsafeRawBufferPointer) -> ([UInt8], [UInt8])? {
    #if arch(x86_64)
    guard available else { return nil }
    var a = State(), b = State()
    let common = min(x.count, y.count) / 64
    if common > 0 { State.compress(&a, x.baseAddress!, &b, y.baseAddress!, blocks: common) }
    a.finish(x, from: common * 64)
    b.finish(y, from: common * 64)
    return (a.digest, b.digest)
    #else
    return nil
    #endif
  }
}

#if arch(x86_64)
typealias V = SIMD4<UInt32>

@inline(__always) func m(_ v: V) -> __m128i { unsafeBitCast(v, to: __m128i.self) }
@inline(__always) func v(_ x: __m128i) -> V { unsafeBitCast(x, to: V.self) }

/// The round constants, four per vector.
let roundConstants: [V] = {
  let k: [UInt32] = [
    0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
    0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
    0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
    0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
    0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
    0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
    0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
    0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
  ]
  return (0..<16).map { V(k[4 * $0], k[4 * $0 + 1], k[4 * $0 + 2], k[4 * $0 + 3]) }
}()

/// One SHA-256 state in the layout the SHA extensions work on: `abef` holds (F, E, B, A) and `cdgh`
/// holds (H, G, D, C), lane 0 first; `w` is the message schedule window W[t-16..t-1] as four vectors.
struct State {
  var abef = V(0x9b05_688c, 0x510e_527f, 0xbb67_ae85, 0x6a09_e667)
  var cdgh = V(0x5be0_cd19, 0x1f83_d9ab, 0xa54f_f53a, 0x3c6e_f372)
  var w0 = V(), w1 = V(), w2 = V(), w3 = V()
  var savedABEF = V(), savedCDGH = V()
  var length = 0

  /// Loads four big-endian words.
  @inline(__always) static func load(_ p: UnsafeRawPointer) -> V {
    let x = p.loadUnaligned(as: V.self)
    return V(x[0].byteSwapped, x[1].byteSwapped, x[2].byteSwapped, x[3].byteSwapped)
  }

  @inline(__always) mutating func begin(_ p: UnsafeRawPointer) {
    w0 = State.load(p); w1 = State.load(p + 16); w2 = State.load(p + 32); w3 = State.load(p + 48)
    savedABEF = abef
    savedCDGH = cdgh
  }

  /// Rounds 4g ..< 4g+4. From g = 4 on, the next schedule vector is
  /// msg2(msg1(W[t-16..], W[t-12..]) + W[t-7..], W[t-4..]) and the window moves on by one vector.
  @inline(__always) mutating func rounds(_ g: Int) {
    let w: V
    switch g {
    case 0: w = w0
    case 1: w = w1
    case 2: w = w2
    case 3: w = w3
    default:
      let t = v(_mm_sha256msg1_epu32(m(w0), m(w1))) &+ V(w2[1], w2[2], w2[3], w3[0])
      let next = v(_mm_sha256msg2_epu32(m(t), m(w3)))
      w0 = w1; w1 = w2; w2 = w3; w3 = next
      w = next
    }
    let wk = w &+ roundConstants[g]
    cdgh = v(_mm_sha256rnds2_epu32(m(cdgh), m(abef), m(wk)))
    abef = v(_mm_sha256rnds2_epu32(m(abef), m(cdgh), m(V(wk[2], wk[3], wk[2], wk[3]))))
  }

  @inline(__always) mutating func end() {
    abef = abef &+ savedABEF
    cdgh = cdgh &+ savedCDGH
  }

  /// `blocks` 64-byte blocks of two streams, their rounds interleaved (written out: the group number must be
  /// a constant for the schedule's switch to fold away).
  @inline(never)
  static func compress(_ x: inout State, _ px: UnsafeRawPointer, _ y: inout State, _ py: UnsafeRawPointer, blocks: Int) {
    var a = x, b = y
    for i in 0..<blocks {
      a.begin(px + 64 * i); b.begin(py + 64 * i)
      a.rounds(0); b.rounds(0); a.rounds(1); b.rounds(1); a.rounds(2); b.rounds(2); a.rounds(3); b.rounds(3)
      a.rounds(4); b.rounds(4); a.rounds(5); b.rounds(5); a.rounds(6); b.rounds(6); a.rounds(7); b.rounds(7)
      a.rounds(8); b.rounds(8); a.rounds(9); b.rounds(9); a.rounds(10); b.rounds(10); a.rounds(11); b.rounds(11)
      a.rounds(12); b.rounds(12); a.rounds(13); b.rounds(13); a.rounds(14); b.rounds(14); a.rounds(15); b.rounds(15)
      a.end(); b.end()
    }
    a.length += 64 * blocks
    b.length += 64 * blocks
    x = a
    y = b
  }

  /// `blocks` 64-byte blocks of one stream.
  @inline(never)
  static func compress(_ x: inout State, _ px: UnsafeRawPointer, blocks: Int) {
    var a = x
    for i in 0..<blocks {
      a.begin(px + 64 * i)
      a.rounds(0); a.rounds(1); a.rounds(2); a.rounds(3); a.rounds(4); a.rounds(5); a.rounds(6); a.rounds(7)
      a.rounds(8); a.rounds(9); a.rounds(10); a.rounds(11); a.rounds(12); a.rounds(13); a.rounds(14); a.rounds(15)
      a.end()
    }
    a.length += 64 * blocks
    x = a
  }

  /// Hashes `data[from...]` (whole blocks one stream at a time) and SHA-256's padding: 0x80, zeros, and the
  /// bit length as a big-endian u64.
  mutating func finish(_ data: UnsafeRawBufferPointer, from: Int) {
    let whole = (data.count - from) / 64
    if whole > 0 { State.compress(&self, data.baseAddress! + from, blocks: whole) }
    let rest = data.count - from - 64 * whole
    var tail = [UInt8](repeating: 0, count: rest < 56 ? 64 : 128)
    for i in 0..<rest { tail[i] = data[from + 64 * whole + i] }
    tail[rest] = 0x80
    let bits = UInt64(length + rest) * 8
    for i in 0..<8 { tail[tail.count - 1 - i] = UInt8(truncatingIfNeeded: bits >> (8 * UInt64(i))) }
    tail.withUnsafeBytes { State.compress(&self, $0.baseAddress!, blocks: $0.count / 64) }
  }

  /// The digest: A..H as big-endian words.
  var digest: [UInt8] {
    let words = [abef[3], abef[2], cdgh[3], cdgh[2], abef[1], abef[0], cdgh[1], cdgh[0]]
    var out = [UInt8](repeating: 0, count: 32)
    for (i, w) in words.enumerated() { for j in 0..<4 { out[4 * i + j] = UInt8(truncatingIfNeeded: w >> (24 - 8 * UInt32(j))) } }
    return out
  }
}
#endif
