import AgoraCrypto
@testable import AgoraDigest
import AgoraWire
import Testing

/// BLAKE3, the envelope's payload digest (SPEC §6): known answers from `b3sum` (Debian's b3sum 1.3.3, on
/// inputs of octets `i mod 251`, the pattern of BLAKE3's own test vectors), the AVX-512 code against the
/// portable code, and any way of cutting the input into pieces against the whole.
@Suite struct Blake3Tests {
  /// Reproduce with `python3 -c "import sys; sys.stdout.buffer.write(bytes(i % 251 for i in range(N)))" | b3sum`.
  static let known: [(Int, String)] = [
    (0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
    (1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"),
    (63, "e9bc37a594daad83be9470df7f7b3798297c3d834ce80ba85d6e207627b7db7b"),
    (64, "4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98"),
    (65, "de1e5fa0be70df6d2be8fffd0e99ceaa8eb6e8c93a63f2d8d1c30ecb6b263dee"),
    (1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"),
    (1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"),
    (1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"),
    (2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"),
    (2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"),
    (3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"),
    (3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3"),
    (4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969"),
    (4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"),
    (5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833"),
    (5121, "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff"),
    (6144, "3e2e5b74e048f3add6d21faab3f83aa44d3b2278afb83b80b3c35164ebeca205"),
    (6145, "f1323a8631446cc50536a9f705ee5cb619424d46887f3c376c695b70e0f0507f"),
    (7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a"),
    (7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817"),
    (8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"),
    (8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b"),
    (16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4"),
    (31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"),
    (102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"),
    (278533, "729fce629b3bfdbd5797db6983eb7a01caaf69ed98a0d2374327bedd4114aab3"),
    (1048576, "74cb441fd087764ca9c3694da742ebe30cbeb3060a17009ca81825c7a8d10343"),
    (3146505, "af47dfe5284779cecdf26b7bb8209b1a4ca1e24bb168adff9f9ee4294a9e52e9")
  ]

  func pattern(_ n: Int) -> [UInt8] { (0..<n).map { UInt8($0 % 251) } }

  func random(_ n: Int, seed: UInt64) -> [UInt8] {
    var g = seed
    return (0..<n).map { _ in
      g = g &* 6364136223846793005 &+ 1442695040888963407
      return UInt8(truncatingIfNeeded: g >> 56)
    }
  }

  /// Every length class of the tree: empty, inside one block, one chunk exactly, a chunk and an octet,
  /// uneven numbers of chunks (left subtrees complete), a whole 1 MiB subtree and three of them plus a tail.
  @Test(arguments: known)
  func knownAnswers(_ c: (Int, String)) {
    let data = pattern(c.0)
    #expect(hex(Blake3.hash(data)) == c.1)
    for kernel in Blake3.Kernel.allCases where Blake3.runs(kernel) {
      let h = Blake3Hasher(kernel: kernel)
      h.update(data)
      #expect(hex(h.finish()) == c.1, "\(kernel) kernel, \(c.0) octets")
    }
  }

  /// Fed in pieces of every awkward size (1 octet, a block and one, a chunk and one, 1 MiB minus one, random),
  /// the hash is the same; a hasher starts over after `finish`.
  @Test(arguments: [1, 65, 1000, 1025, 4096, (1 << 20) - 1, 0])
  func piecesGiveTheWholeHash(piece: Int) {
    let data = random((2 << 20) + 3 * 1024 + 77, seed: UInt64(piece) + 5)
    let whole = Blake3.hash(data)
    let h = Blake3Hasher()
    var rng = UInt64(piece) &+ 11
    var at = 0
    while at < data.count {
      var n = piece
      if n == 0 {  // random piece sizes, up to 200 KiB
        rng = rng &* 6364136223846793005 &+ 1442695040888963407
        n = 1 + Int(rng >> 46)
      }
      // Single octets over 2 MiB are slow in debug builds: past 40 KiB, take the rest in large pieces.
      if piece == 1 && at > 40_000 { n = 300_001 }
      let end = min(data.count, at + n)
      data[at..<end].withUnsafeBytes { h.update($0) }
      at = end
    }
    #expect(h.finish() == whole)
    h.update(data)
    #expect(h.finish() == whole)
  }

  /// Each SIMD kernel gives the portable code's chaining values at every input count (partial batches of
  /// 1…15 inputs, several batches, counters across the 32-bit boundary). A kernel this CPU or OS does not run
  /// shows as skipped.
  @Test(.enabled(if: Blake3.runs(.avx512), "this CPU or OS does not run AVX-512F")) func avx512EqualsPortable() { kernelEqualsPortable(.avx512) }
  @Test(.enabled(if: Blake3.runs(.avx2), "this CPU or OS does not run AVX2")) func avx2EqualsPortable() { kernelEqualsPortable(.avx2) }

  func kernelEqualsPortable(_ kernel: Blake3.Kernel) {
    let data = random(64 << 10, seed: 99)
    for count in [1, 2, 7, 8, 9, 15, 16, 17, 33, 64] {
      for counter: UInt64 in [0, 5, (1 << 32) - 3] {
        var wide = [UInt8](repeating: 0, count: 32 * count), portable = wide
        data.withUnsafeBytes { d in
          wide.withUnsafeMutableBytes { o in
            Blake3.hashMany(base: d.baseAddress!, stride: 1024, count: count, blocks: 16, counter: counter, incrementCounter: true,
                            flags: 0, flagsStart: Blake3.chunkStart, flagsEnd: Blake3.chunkEnd, out: o.baseAddress!, kernel: kernel)
          }
          portable.withUnsafeMutableBytes { o in
            Blake3.hashMany(base: d.baseAddress!, stride: 1024, count: count, blocks: 16, counter: counter, incrementCounter: true,
                            flags: 0, flagsStart: Blake3.chunkStart, flagsEnd: Blake3.chunkEnd, out: o.baseAddress!, kernel: .portable)
          }
        }
        #expect(wide == portable, "\(kernel): \(count) chunks from counter \(counter)")
      }
    }
  }

  /// The payload digest is BLAKE3 of the payload however the envelope cuts it into chunks: the SPEC's
  /// test-vector payload (2,500 octets i mod 256 in 1,024-octet chunks).
  @Test func payloadDigestIsBlake3OfThePayload() {
    let payload = (0..<2500).map { UInt8($0 % 256) }
    let d = PayloadDigest()
    for start in stride(from: 0, to: payload.count, by: 1024) {
      Array(payload[start..<min(payload.count, start + 1024)]).withUnsafeBytes { d.update($0) }
    }
    // python3 -c "import sys; sys.stdout.buffer.write(bytes(i % 256 for i in range(2500)))" | b3sum
    #expect(hex(d.finish()) == "37a0c012d083e115244798d8fbb1f3508f87b3a86432e7004263552858c9fc7a")
  }
}
