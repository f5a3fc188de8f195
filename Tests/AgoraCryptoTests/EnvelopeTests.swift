import AgoraCrypto
import AgoraTestSupport
import AgoraWire
import Testing

/// The update envelope against misuse: every way of damaging, replaying or misdirecting it is rejected
/// with a typed error (after libsodium's own tests: empty, truncated, tampered, wrong key, replayed).
@Suite struct EnvelopeTests {
  struct Parties {
    let node = try! Sodium.signKeypair(seed: [UInt8](repeating: 1, count: 32))
    let other = try! Sodium.signKeypair(seed: [UInt8](repeating: 2, count: 32))
    let coordinator = try! Sodium.boxKeypair(seed: [UInt8](repeating: 3, count: 32))
    let stranger = try! Sodium.boxKeypair(seed: [UInt8](repeating: 4, count: 32))
    var nodeID: [UInt8] { Envelope.fingerprint(node.publicKey) }
    func context(round: UInt64 = 7) -> Envelope.Context {
      Envelope.Context(federation: "openeurollm", round: round, baseHash: [UInt8](repeating: 0xAB, count: 32), nodeID: nodeID)
    }
    func lookup(_ id: [UInt8]) -> [UInt8]? { id == nodeID ? node.publicKey : nil }
  }

  let p = Parties()
  let payload: [UInt8] = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 31) }

  /// Seals `payload` in 1 KiB chunks: (head, chunks, final).
  func sealed(context: Envelope.Context? = nil, key: [UInt8]? = nil, recipient: [UInt8]? = nil,
              suite: EnvelopeSuite = .xchacha20poly1305) throws -> ([UInt8], [[UInt8]], [UInt8]) {
    let s = try EnvelopeSealer(context: context ?? p.context(), payloadLength: UInt64(payload.count), chunkSize: 1024,
                               recipient: recipient ?? p.coordinator.publicKey, signingSecretKey: key ?? p.node.secretKey, suite: suite)
    var chunks: [[UInt8]] = []
    var i = 0
    while i < payload.count {
      chunks.append(try s.seal(Array(payload[i..<min(payload.count, i + 1024)])))
      i += 1024
    }
    return (s.headBytes, chunks, try s.finish())
  }

  func open(_ head: [UInt8], _ chunks: [[UInt8]], _ final: [UInt8], expected: Envelope.Context? = nil,
            session: [UInt8]? = nil) throws -> [UInt8] {
    let o = try EnvelopeOpener(headBytes: head, expected: expected ?? p.context(), aggregationPublicKey: p.coordinator.publicKey,
                               aggregationSecretKey: p.coordinator.secretKey, sessionNodeID: session, signerKey: p.lookup)
    var out: [UInt8] = []
    for c in chunks { out += try o.open(c) }
    try o.finish(final)
    #expect(o.verified)
    return out
  }

  func expectError(_ expected: EnvelopeError, _ body: () throws -> Void) {
    do {
      try body()
      Issue.record("expected \(expected), nothing was thrown")
    } catch let e as EnvelopeError {
      #expect(e == expected)
    } catch {
      Issue.record("expected \(expected), got \(error)")
    }
  }

  @Test(arguments: EnvelopeSuite.allCases) func roundTrip(suite: EnvelopeSuite) throws {
    let (h, c, f) = try sealed(suite: suite)
    #expect(try Envelope.Head.decode(h).suite == suite)
    #expect(c.map(\.count) == [1041, 1041, 1041, 1041, 921], "17 octets of overhead per chunk in either suite")
    #expect(c.count == 5)
    #expect(try open(h, c, f, session: p.nodeID) == payload)
    // The ciphertext does not contain the plaintext.
    #expect(!c[0].starts(with: payload.prefix(32)))
  }

  @Test(arguments: EnvelopeSuite.allCases) func crossRoundAndCrossFederationReplaysAreRejected(suite: EnvelopeSuite) throws {
    let (h, c, f) = try sealed(suite: suite)
    expectError(.wrongRound(expected: 8, got: 7)) { _ = try open(h, c, f, expected: p.context(round: 8)) }
    var other = p.context()
    other.federation = "another"
    expectError(.wrongFederation(expected: "another", got: "openeurollm")) { _ = try open(h, c, f, expected: other) }
    var base = p.context()
    base.baseHash[0] ^= 1
    expectError(.wrongBase) { _ = try open(h, c, f, expected: base) }
    expectError(.wrongNode) { _ = try open(h, c, f, session: [UInt8](repeating: 9, count: 32)) }
  }

  @Test(arguments: EnvelopeSuite.allCases) func editedHeadFieldsBreakAuthentication(suite: EnvelopeSuite) throws {
    // An attacker rewrites the round in the head to replay into round 8: the chunks no longer authenticate.
    let (h, c, f) = try sealed(suite: suite)
    var head = try Envelope.Head.decode(h)
    head.context.round = 8
    expectError(.badChunk(index: 0, reason: "authentication failed (tampered, reordered or replayed)")) {
      _ = try open(head.encode(), c, f, expected: p.context(round: 8))
    }
  }

  /// The suite is part of the head, so every chunk authenticates it: an envelope relabelled with the other suite
  /// does not open; an unknown suite, and an AES-256-GCM head whose unused stream header is not zero, are refused.
  @Test(arguments: EnvelopeSuite.allCases) func theSuiteIsBoundToTheHead(suite: EnvelopeSuite) throws {
    let (h, c, f) = try sealed(suite: suite)
    var relabelled = try Envelope.Head.decode(h)
    relabelled.suite = suite == .aes256gcm ? .xchacha20poly1305 : .aes256gcm
    relabelled.streamHeader = [UInt8](repeating: 0, count: 24)
    expectError(.badChunk(index: 0, reason: "authentication failed (tampered, reordered or replayed)")) { _ = try open(relabelled.encode(), c, f) }
    var unknown = h
    unknown[5] = 7
    expectError(.unsupportedSuite(7)) { _ = try open(unknown, c, f) }
    if suite == .aes256gcm {
      var header = h
      header[header.count - 1] = 1
      expectError(.malformed("an AES-256-GCM envelope's stream header is not zero")) { _ = try open(header, c, f) }
    }
  }

  /// A chunk that fails authentication counts for nothing, not even in the payload digest (which is fed
  /// while decrypting): the genuine chunk opens after it and the signature still verifies. Chunks of several
  /// `SecretStream.piece`s, tampered in the last piece, so the digest has seen most of the bad chunk.
  @Test(arguments: EnvelopeSuite.allCases) func aRejectedChunkLeavesNoTraceInTheDigest(suite: EnvelopeSuite) throws {
    let size = 2 * SecretStream.piece + 1000
    let payload = (0..<(3 * size + 5)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
    let s = try EnvelopeSealer(context: p.context(), payloadLength: UInt64(payload.count), chunkSize: size,
                               recipient: p.coordinator.publicKey, signingSecretKey: p.node.secretKey, suite: suite)
    let chunks = try stride(from: 0, to: payload.count, by: size).map { try s.seal(Array(payload[$0..<min(payload.count, $0 + size)])) }
    let final = try s.finish()
    let o = try EnvelopeOpener(headBytes: s.headBytes, expected: p.context(), aggregationPublicKey: p.coordinator.publicKey,
                               aggregationSecretKey: p.coordinator.secretKey, sessionNodeID: nil, signerKey: p.lookup)
    var out = try o.open(chunks[0])
    var bad = chunks[1]
    bad[bad.count - 40] ^= 1
    expectError(.badChunk(index: 1, reason: "authentication failed (tampered, reordered or replayed)")) { _ = try o.open(bad) }
    expectError(.badChunk(index: 1, reason: "authentication failed (tampered, reordered or replayed)")) { _ = try o.open(chunks[2]) }
    for c in chunks[1...] { out += try o.open(c) }
    try o.finish(final)
    #expect(o.verified && out == payload)
  }

  @Test(arguments: EnvelopeSuite.allCases) func tamperedReorderedReplayedAndTruncatedChunksAreRejected(suite: EnvelopeSuite) throws {
    let (h, c, f) = try sealed(suite: suite)
    var bad = c
    bad[2][10] ^= 0x40
    expectError(.badChunk(index: 2, reason: "authentication failed (tampered, reordered or replayed)")) { _ = try open(h, bad, f) }
    expectError(.badChunk(index: 1, reason: "authentication failed (tampered, reordered or replayed)")) { _ = try open(h, [c[0], c[2], c[1], c[3], c[4]], f) }
    expectError(.badChunk(index: 1, reason: "authentication failed (tampered, reordered or replayed)")) { _ = try open(h, [c[0], c[0], c[1], c[2], c[3]], f) }
    expectError(.truncated("4096 of 5000 payload bytes")) { _ = try open(h, Array(c.prefix(4)), f) }
    // The final message moved forward in place of the last chunk: its position no longer authenticates.
    expectError(.badChunk(index: 4, reason: "64 bytes, expected 904")) { _ = try open(h, Array(c.prefix(4)) + [f], c[4]) }
    var shortened = c
    shortened[4].removeLast()
    expectError(.badChunk(index: 4, reason: "903 bytes, expected 904")) { _ = try open(h, shortened, f) }
  }

  @Test(arguments: EnvelopeSuite.allCases) func wrongRecipientAndWrongSignerAreRejected(suite: EnvelopeSuite) throws {
    let (h, c, f) = try sealed(recipient: p.stranger.publicKey, suite: suite)
    expectError(.cannotOpenKey) { _ = try open(h, c, f) }
    // Sealed with another node's key while claiming this node's id: the signature fails.
    let (h2, c2, f2) = try sealed(key: p.other.secretKey, suite: suite)
    expectError(.badSignature) { _ = try open(h2, c2, f2) }
    // An id nobody enrolled.
    var ctx = p.context()
    ctx.nodeID = Envelope.fingerprint(p.other.publicKey)
    let (h3, c3, f3) = try sealed(context: ctx, key: p.other.secretKey, suite: suite)
    expectError(.unknownNode(hex(ctx.nodeID))) { _ = try open(h3, c3, f3, expected: ctx) }
  }

  @Test func malformedHeadsGiveDecodeErrors() throws {
    let (h, _, _) = try sealed()
    expectError(.decode(.short("magic", needed: 4, available: 0))) { _ = try open([], [], []) }
    expectError(.decode(.short("stream header", needed: 24, available: 23))) { _ = try open(Array(h.dropLast()), [], []) }
    expectError(.decode(.trailing(1))) { _ = try open(h + [0], [], []) }
    var v = h
    v[4] = 1  // version 1 (BLAKE2b digests) is no longer spoken
    expectError(.unsupportedVersion(1)) { _ = try open(v, [], []) }
    v[4] = 4  // nor version 4 (no suite octet)
    expectError(.unsupportedVersion(4)) { _ = try open(v, [], []) }
    var r = h
    r[7] = 1  // the reserved octets after the suite
    expectError(.malformed("reserved bytes are not zero")) { _ = try open(r, [], []) }
    var m = h
    m[0] = 0x42
    do { _ = try open(m, [], []); Issue.record("bad magic accepted") } catch let e as EnvelopeError {
      guard case .malformed = e else { Issue.record("\(e)"); return }
    }
  }

  @Test func sealerRefusesMisuse() throws {
    let s = try EnvelopeSealer(context: p.context(), payloadLength: 2000, chunkSize: 1024, recipient: p.coordinator.publicKey, signingSecretKey: p.node.secretKey)
    #expect(throws: EnvelopeError.self) { _ = try s.seal([UInt8](repeating: 0, count: 1000)) }
    #expect(throws: EnvelopeError.self) { _ = try s.finish() }
  }
}
