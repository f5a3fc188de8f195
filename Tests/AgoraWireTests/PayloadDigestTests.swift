import AgoraCrypto
import AgoraDigest
import AgoraWire
import Testing

/// The envelope's payload digest: the two-lane SHA-256 (SHA extensions) against OpenSSL's SHA-256 of the same
/// bytes, and the whole construction against values computed independently (Python's hashlib, from SPEC §6).
@Suite struct PayloadDigestTests {
  func bytes(_ n: Int, seed: UInt64) -> [UInt8] {
    var g = seed
    return (0..<n).map { _ in
      g = g &* 6364136223846793005 &+ 1442695040888963407
      return UInt8(truncatingIfNeeded: g >> 56)
    }
  }

  /// Lengths on every side of the padding boundaries (55/56/64 octets), unequal lanes either way round, and
  /// a whole chunk: both digests equal OpenSSL's.
  @Test(arguments: [(0, 0), (1, 0), (0, 3), (55, 55), (56, 56), (63, 64), (64, 63), (119, 120), (127, 128), (128, 1000),
                    (4096 + 17, 1000), ((1 << 20), (1 << 20) - 1), (3, (1 << 19) + 64)])
  func lanesAreSHA256(lengths: (Int, Int)) throws {
    let x = bytes(lengths.0, seed: 1), y = bytes(lengths.1, seed: 2)
    let got = x.withUnsafeBytes { a in y.withUnsafeBytes { b in SHA256Lanes.hash(a, b) } }
    guard SHA256Lanes.available else {
      #expect(got == nil)
      return
    }
    #expect(got?.0 == SHA256.hash(x))
    #expect(got?.1 == SHA256.hash(y))
  }

  /// A chunk digest is SHA-256(n ‖ SHA-256(first half) ‖ SHA-256(second half)), the first half a whole
  /// number of blocks.
  @Test(arguments: [0, 1, 64, 127, 128, 129, 1000, 1 << 20, (1 << 20) + 5])
  func chunkDigestFollowsTheSpec(n: Int) throws {
    let p = bytes(n, seed: UInt64(n) + 9)
    let s = min(n, 64 * ((n + 127) / 128))
    var length = [UInt8](repeating: 0, count: 8)
    for i in 0..<8 { length[i] = UInt8(truncatingIfNeeded: UInt64(n) >> (8 * UInt64(i))) }
    let expected = SHA256.hash(length + SHA256.hash(Array(p[0..<s])) + SHA256.hash(Array(p[s...])))
    #expect(p.withUnsafeBytes { PayloadDigest().chunkDigest($0) } == expected)
  }

  /// Known answers computed with Python's hashlib from the definition in SPEC §6: the empty chunk, and the
  /// test-vector payload (2,500 octets i mod 256 in 1,024-octet chunks).
  @Test func knownAnswers() throws {
    #expect(hex(PayloadDigest().chunkDigest(UnsafeRawBufferPointer(start: nil, count: 0))) == "313c96a87b748b477edd2097d1235f57bba5cc10c1a4e21c1707f773751add99")
    let payload = (0..<2500).map { UInt8($0 % 256) }
    let d = PayloadDigest()
    for start in stride(from: 0, to: payload.count, by: 1024) {
      Array(payload[start..<min(payload.count, start + 1024)]).withUnsafeBytes { d.update($0) }
    }
    #expect(hex(d.finish()) == "9215054512b316f8bff3bdbd1dd2333f50dd7f2141f88f7c01fb387555d43998")
  }
}
