@testable import AgoraCrypto
import AgoraTestSupport
import AgoraWire
import CSodium
import Testing

/// Agora's secretstream builds each message from OpenSSL's ChaCha20 and Poly1305; these tests hold it to
/// libsodium's own `crypto_secretstream_xchacha20poly1305_push`/`_pull`, byte for byte, in both directions.
@Suite struct SecretStreamTests {
  let key: [UInt8] = (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
  let header: [UInt8] = (0..<24).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }

  /// libsodium's state for the stream that starts from `header` (init_pull derives what init_push would).
  func sodiumState() -> UnsafeMutablePointer<crypto_secretstream_xchacha20poly1305_state> {
    let st = UnsafeMutablePointer<crypto_secretstream_xchacha20poly1305_state>.allocate(capacity: 1)
    _ = crypto_secretstream_xchacha20poly1305_init_pull(st, header, key)
    return st
  }

  func sodiumPush(_ st: UnsafeMutablePointer<crypto_secretstream_xchacha20poly1305_state>, _ m: [UInt8], ad: [UInt8], tag: UInt8) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: m.count + SecretStream.overhead)
    let r = crypto_secretstream_xchacha20poly1305_push(st, &out, nil, m, UInt64(m.count), ad.isEmpty ? nil : ad, UInt64(ad.count), tag)
    #expect(r == 0)
    return out
  }

  func sodiumPull(_ st: UnsafeMutablePointer<crypto_secretstream_xchacha20poly1305_state>, _ c: [UInt8], ad: [UInt8]) -> ([UInt8], UInt8)? {
    var out = [UInt8](repeating: 0, count: c.count - SecretStream.overhead)
    var tag: UInt8 = 0
    guard crypto_secretstream_xchacha20poly1305_pull(st, &out, nil, &tag, c, UInt64(c.count), ad.isEmpty ? nil : ad, UInt64(ad.count)) == 0 else { return nil }
    return (out, tag)
  }

  func message(_ n: Int, _ seed: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed) } }

  /// Every message-length class around the 16- and 64-byte boundaries (libsodium pads by mlen mod 16),
  /// associated data of every residue, and all four tags (TAG_REKEY and TAG_FINAL rekey the stream).
  @Test func identicalToLibsodiumInBothDirections() throws {
    let lengths = [0, 1, 15, 16, 17, 47, 48, 49, 63, 64, 65, 1000, SecretStream.piece - 1, SecretStream.piece, SecretStream.piece + 1, (1 << 20) + 3]
    let ads: [[UInt8]] = [[], [1], Array(repeating: 2, count: 15), Array(repeating: 3, count: 16), Array(repeating: 4, count: 17), Array(repeating: 5, count: 32)]
    let tags: [UInt8] = [SecretStream.tagMessage, crypto_secretstream_xchacha20poly1305_tag_push(), SecretStream.tagRekey, SecretStream.tagMessage]
    let ours = try SecretStreamPush(key: key, header: header)
    let theirs = sodiumState()
    let oursPull = try SecretStreamPull(key: key, header: header)
    let theirsPull = sodiumState()
    defer { theirs.deallocate(); theirsPull.deallocate() }
    var i = 0
    for n in lengths {
      for ad in ads {
        let m = message(n, i)
        let tag = tags[i % tags.count]
        let a = try m.withUnsafeBytes { mb in
          try [UInt8](unsafeUninitializedCapacity: n + SecretStream.overhead) { out, c in
            try ours.push(mb, ad: ad, tag: tag, into: UnsafeMutableRawBufferPointer(out)); c = out.count
          }
        }
        let b = sodiumPush(theirs, m, ad: ad, tag: tag)
        #expect(a == b, "message \(i): \(n) bytes, \(ad.count) bytes of ad, tag \(tag)")
        // Ours opens libsodium's message, libsodium opens ours.
        let (plain, final) = try oursPull.pull(b, ad: ad)
        #expect(plain == m && !final)
        let back = sodiumPull(theirsPull, a, ad: ad)
        #expect(back?.0 == m && back?.1 == tag)
        i += 1
      }
    }
    let last = try ours.push([9, 9, 9], ad: [], final: true)
    #expect(last == sodiumPush(theirs, [9, 9, 9], ad: [], tag: SecretStream.tagFinal))
    #expect(try oursPull.pull(last).final)
    #expect(oursPull.finished)
  }

  /// `each` sees the plaintext piece by piece, in order and whole, on both ends.
  @Test func piecesShownInOrder() throws {
    let push = try SecretStreamPush(key: key, header: header)
    let pull = try SecretStreamPull(key: key, header: header)
    let m = message(3 * SecretStream.piece + 77, 3)
    var seen: [[UInt8]] = []
    var c = [UInt8](repeating: 0, count: m.count + SecretStream.overhead)
    try m.withUnsafeBytes { mb in
      try c.withUnsafeMutableBytes { try push.push(mb, ad: [1], tag: SecretStream.tagMessage, into: $0) { seen.append(Array($0)) } }
    }
    #expect(seen.map(\.count) == [SecretStream.piece, SecretStream.piece, SecretStream.piece, 77])
    #expect(Array(seen.joined()) == m)
    var opened: [[UInt8]] = []
    var out = [UInt8](repeating: 0, count: m.count)
    _ = try c.withUnsafeBytes { cb in
      try out.withUnsafeMutableBytes { try pull.pull(cb, ad: [1], into: $0) { opened.append(Array($0)) } }
    }
    #expect(out == m && Array(opened.joined()) == m)
  }

  /// The 32-bit message counter wrapping to 0 rekeys the stream, in libsodium and here alike.
  @Test func counterWrapAroundRekeysLikeLibsodium() throws {
    let ours = try SecretStreamPush(key: key, header: header)
    let theirs = sodiumState()
    defer { theirs.deallocate() }
    ours.setCounter(0xFFFF_FFFE)
    withUnsafeMutableBytes(of: &theirs.pointee.nonce) { $0.storeBytes(of: UInt32(0xFFFF_FFFE).littleEndian, as: UInt32.self) }
    for k in 0..<4 {
      let m = message(100 + k, k)
      #expect(try ours.push(m) == sodiumPush(theirs, m, ad: [], tag: SecretStream.tagMessage), "message \(k) around the wrap")
    }
  }

  /// A forged message is refused and leaves the stream where it was: the genuine one still opens.
  @Test func forgedMessageLeavesTheStreamIntact() throws {
    let push = try SecretStreamPush(key: key, header: header)
    let pull = try SecretStreamPull(key: key, header: header)
    let c0 = try push.push(message(5000, 1), ad: [7])
    let c1 = try push.push(message(10, 2), ad: [7])
    for pos in [0, 1, 2500, c0.count - 1] {
      var bad = c0
      bad[pos] ^= 0x01
      #expect(throws: SodiumError.self) { try pull.pull(bad, ad: [7]) }
    }
    #expect(throws: SodiumError.self) { try pull.pull(c0, ad: [8]) }   // other associated data
    #expect(throws: SodiumError.self) { try pull.pull(c1, ad: [7]) }   // out of order
    #expect(throws: SodiumError.self) { try pull.pull(Array(c0.prefix(16)), ad: [7]) }  // shorter than the overhead
    #expect(try pull.pull(c0, ad: [7]).message == message(5000, 1))
    #expect(try pull.pull(c1, ad: [7]).message == message(10, 2))
    #expect(throws: SodiumError.self) { try pull.pull(c1, ad: [7]) }   // replayed
  }

  /// SHA-256 against FIPS 180-4's examples, whole and fed in pieces.
  @Test func sha256KnownAnswers() {
    #expect(hex(SHA256.hash([UInt8]())) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(hex(SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    let h = SHA256()
    for _ in 0..<1000 { h.update([UInt8](repeating: 0x61, count: 1000)) }
    #expect(hex(h.finish()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")  // one million 'a'
  }
}
