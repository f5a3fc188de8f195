import AgoraWire

/// The end-to-end envelope of a model update: signed by the node, encrypted for the coordinator's
/// aggregation key, bound to its federation, round, base version and node, and streamable in chunks.
///
/// Layout (see Protocol/SPEC.md, "Update envelope"):
///
///     head  = "AGEV" ‖ version u8 (=5) ‖ suite u8 ‖ 2 zero bytes ‖ federation (u16 len ‖ UTF-8) ‖ round u64 ‖
///             base hash (32) ‖ node id (32) ‖ payload length u64 ‖ chunk size u32 ‖
///             sealed stream key (80: crypto_box_seal of the 32-byte stream key) ‖ stream header (24)
///     chunk_i = push(payload[i·chunk ..< (i+1)·chunk], ad = SHA-256(head), TAG_MESSAGE)
///     final   = push(Ed25519 signature, ad = SHA-256(head), TAG_FINAL)
///     signature = Ed25519(node key, "AGORA-UPDATE-v4" ‖ SHA-256(head) ‖ payload digest)
///
/// `push` is the suite's (`EnvelopeSuite`): libsodium's secretstream (XChaCha20-Poly1305; the header is its
/// header) or AES-256-GCM with a counter nonce (`GCMStream`; the header is 24 zero bytes). The sender chooses
/// (AES-256-GCM where the CPU has AES instructions); a receiver opens both.
///
/// The payload digest (`PayloadDigest`) is BLAKE3 of the whole payload, computed on both ends of every
/// update, 16 of BLAKE3's chunks at a time with AVX-512. SHA-256 hashes only the head. (Earlier envelope
/// versions and why they changed: SPEC.md's change log; speeds: BENCHMARKS.md.)
///
/// Every chunk is authenticated with the head as associated data, so changing any head field (another
/// round, another base, another node) makes decryption fail; secretstream's counter rejects reordered,
/// dropped or replayed chunks; TAG_FINAL and the payload length reject truncation; the signature makes the
/// update attributable to the node even after a relay or a store-and-forward hop.
public enum Envelope {
  public static let magic: [UInt8] = Array("AGEV".utf8)
  public static let version: UInt8 = 5
  public static let signingContext: [UInt8] = Array("AGORA-UPDATE-v4".utf8)
  public static let maxFederationBytes = 255
  public static let minChunk = 1 << 10
  public static let maxChunk = 16 << 20
  public static let maxPayload: UInt64 = 1 << 40

  /// What an envelope is bound to.
  public struct Context: Equatable, Sendable {
    public var federation: String
    public var round: UInt64
    /// Content hash (32 bytes) of the model version the update was trained from.
    public var baseHash: [UInt8]
    /// Fingerprint (32 bytes) of the node's signing key.
    public var nodeID: [UInt8]
    public init(federation: String, round: UInt64, baseHash: [UInt8], nodeID: [UInt8]) {
      self.federation = federation
      self.round = round
      self.baseHash = baseHash
      self.nodeID = nodeID
    }
  }

  /// The parsed head of an envelope.
  public struct Head: Equatable, Sendable {
    public var context: Context
    public var payloadLength: UInt64
    public var chunkSize: Int
    public var sealedKey: [UInt8]
    public var streamHeader: [UInt8]
    public var suite: EnvelopeSuite = .xchacha20poly1305

    public var chunkCount: Int { Int((payloadLength + UInt64(chunkSize) - 1) / UInt64(chunkSize)) }

    public func encode() -> [UInt8] {
      var w = ByteWriter(capacity: 256)
      w.raw(Envelope.magic)
      w.u8(Envelope.version)
      w.u8(suite.rawValue)
      w.raw([0, 0])
      w.string(context.federation)
      w.u64(context.round)
      w.raw(context.baseHash)
      w.raw(context.nodeID)
      w.u64(payloadLength)
      w.u32(UInt32(chunkSize))
      w.raw(sealedKey)
      w.raw(streamHeader)
      return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws -> Head {
      var r = ByteReader(bytes)
      guard try r.raw(4, "magic") == Envelope.magic else { throw EnvelopeError.malformed("not an Agora envelope (bad magic)") }
      let v = try r.u8("version")
      guard v == Envelope.version else { throw EnvelopeError.unsupportedVersion(v) }
      let code = try r.u8("suite")
      guard let suite = EnvelopeSuite(rawValue: code) else { throw EnvelopeError.unsupportedSuite(code) }
      guard try r.raw(2, "reserved") == [0, 0] else { throw EnvelopeError.malformed("reserved bytes are not zero") }
      let fed = try r.string("federation", max: Envelope.maxFederationBytes)
      let round = try r.u64("round")
      let base = try r.raw(32, "base hash")
      let node = try r.raw(32, "node id")
      let len = try r.u64("payload length")
      guard len <= Envelope.maxPayload else { throw DecodeError.tooLarge("payload length", value: Int(len), bound: Int(Envelope.maxPayload)) }
      let chunk = Int(try r.u32("chunk size"))
      guard chunk >= Envelope.minChunk, chunk <= Envelope.maxChunk else {
        throw EnvelopeError.malformed("chunk size \(chunk) outside \(Envelope.minChunk)...\(Envelope.maxChunk)")
      }
      let sealed = try r.raw(SecretStream.keyBytes + Sodium.sealBytes, "sealed key")
      let header = try r.raw(SecretStream.headerBytes, "stream header")
      try r.expectEnd()
      guard suite != .aes256gcm || header.allSatisfy({ $0 == 0 }) else { throw EnvelopeError.malformed("an AES-256-GCM envelope's stream header is not zero") }
      return Head(context: Context(federation: fed, round: round, baseHash: base, nodeID: node), payloadLength: len,
                  chunkSize: chunk, sealedKey: sealed, streamHeader: header, suite: suite)
    }
  }

  /// The signed statement: context string, head hash and payload hash.
  static func signedBytes(headHash: [UInt8], payloadHash: [UInt8]) -> [UInt8] { signingContext + headHash + payloadHash }

  /// Fingerprint of a signing public key: BLAKE2b-256 of it. Used as the node id.
  public static func fingerprint(_ signingPublicKey: [UInt8]) -> [UInt8] { Sodium.blake2b(signingPublicKey) }
}

public enum EnvelopeError: Error, Equatable, CustomStringConvertible {
  case malformed(String)
  case unsupportedVersion(UInt8)
  case unsupportedSuite(UInt8)
  case decode(DecodeError)
  case wrongFederation(expected: String, got: String)
  case wrongRound(expected: UInt64, got: UInt64)
  case wrongBase
  case wrongNode
  case unknownNode(String)
  case cannotOpenKey
  case badChunk(index: Int, reason: String)
  case truncated(String)
  case badSignature
  case misuse(String)

  public var description: String {
    switch self {
    case .malformed(let s): return "malformed envelope: \(s)"
    case .unsupportedVersion(let v): return "envelope version \(v) is not supported (this build speaks \(Envelope.version))"
    case .unsupportedSuite(let s): return "envelope cipher suite \(s) is not supported (this build opens " + EnvelopeSuite.allCases.map { "\($0.rawValue) \($0)" }.joined(separator: ", ") + ")"
    case .decode(let e): return "malformed envelope head: \(e)"
    case .wrongFederation(let e, let g): return "envelope is for federation '\(g)', expected '\(e)' (cross-federation replay?)"
    case .wrongRound(let e, let g): return "envelope is for round \(g), expected \(e) (replayed from another round?)"
    case .wrongBase: return "envelope was trained from another base version"
    case .wrongNode: return "envelope names another node than the session that sent it"
    case .unknownNode(let f): return "envelope signed by unknown node \(f)"
    case .cannotOpenKey: return "cannot open the stream key: not sealed to this coordinator's aggregation key, or tampered"
    case .badChunk(let i, let r): return "chunk \(i) rejected: \(r)"
    case .truncated(let s): return "envelope truncated: \(s)"
    case .badSignature: return "signature does not verify: the update is not the signed one"
    case .misuse(let s): return "envelope API misuse: \(s)"
    }
  }
}

/// Seals a payload into an envelope chunk by chunk; memory is one chunk whatever the payload size.
public final class EnvelopeSealer {
  public let head: Envelope.Head
  public let headBytes: [UInt8]
  let headHash: [UInt8]
  let stream: any ChunkPush
  let payloadHasher = PayloadDigest()
  let signingKey: [UInt8]
  var sent: UInt64 = 0
  public private(set) var chunksSealed = 0

  /// Fixed randomness for reproducible test vectors: the stream key, the sealed box's ephemeral key seed and
  /// the secretstream header (unused by AES-256-GCM). Production code passes nil.
  public struct FixedRandomness {
    public var streamKey: [UInt8], ephemeralSeed: [UInt8], streamHeader: [UInt8]
    public init(streamKey: [UInt8], ephemeralSeed: [UInt8], streamHeader: [UInt8]) {
      self.streamKey = streamKey
      self.ephemeralSeed = ephemeralSeed
      self.streamHeader = streamHeader
    }
  }

  /// `suite`: the AEAD of the chunks; by default the faster one on this CPU (`EnvelopeSuite.preferred`).
  public init(context: Envelope.Context, payloadLength: UInt64, chunkSize: Int, recipient: [UInt8], signingSecretKey: [UInt8],
              suite: EnvelopeSuite = .preferred, fixed: FixedRandomness? = nil) throws {
    guard context.baseHash.count == 32, context.nodeID.count == 32 else { throw EnvelopeError.misuse("base hash and node id are 32 bytes") }
    guard context.federation.utf8.count <= Envelope.maxFederationBytes else { throw EnvelopeError.misuse("federation id longer than 255 bytes") }
    guard chunkSize >= Envelope.minChunk, chunkSize <= Envelope.maxChunk else { throw EnvelopeError.misuse("chunk size \(chunkSize)") }
    guard payloadLength <= Envelope.maxPayload else { throw EnvelopeError.misuse("payload too large") }
    guard signingSecretKey.count == Sodium.signSecretKeyBytes else { throw EnvelopeError.misuse("signing key must be \(Sodium.signSecretKeyBytes) bytes") }
    var key = fixed?.streamKey ?? SecretStream.keygen()
    defer { Sodium.wipe(&key) }
    let sealed = try Sodium.seal(key, to: recipient, ephemeralSeed: fixed?.ephemeralSeed)
    let header: [UInt8]
    switch suite {
    case .xchacha20poly1305:
      let push = try SecretStreamPush(key: key, header: fixed?.streamHeader)
      (stream, header) = (push, push.header)
    case .aes256gcm:
      (stream, header) = (try GCMStreamPush(key: key), [UInt8](repeating: 0, count: SecretStream.headerBytes))
    }
    head = Envelope.Head(context: context, payloadLength: payloadLength, chunkSize: chunkSize, sealedKey: sealed, streamHeader: header, suite: suite)
    headBytes = head.encode()
    headHash = SHA256.hash(headBytes)
    signingKey = signingSecretKey
  }

  /// Encrypts the next chunk: exactly `chunkSize` bytes, except the last, which holds the rest.
  public func seal(_ chunk: UnsafeRawBufferPointer) throws -> [UInt8] {
    try [UInt8](unsafeUninitializedCapacity: chunk.count + SecretStream.overhead) { out, n in
      try seal(chunk, into: UnsafeMutableRawBufferPointer(out))
      n = out.count
    }
  }

  /// `seal` into `out` (`chunk.count + SecretStream.overhead` bytes), e.g. straight into a message buffer.
  public func seal(_ chunk: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws {
    let left = head.payloadLength - sent
    let expected = Int(min(UInt64(head.chunkSize), left))
    guard left > 0 else { throw EnvelopeError.misuse("all \(head.payloadLength) payload bytes were already sealed") }
    guard chunk.count == expected else { throw EnvelopeError.misuse("chunk \(chunksSealed) has \(chunk.count) bytes, expected \(expected)") }
    let saved = payloadHasher.saved()
    do {
      try stream.push(chunk, ad: headHash, tag: SecretStream.tagMessage, into: out) { [payloadHasher] in payloadHasher.update($0) }
    } catch {
      payloadHasher.restore(saved)
      throw error
    }
    sent += UInt64(chunk.count)
    chunksSealed += 1
  }

  public func seal(_ chunk: [UInt8]) throws -> [UInt8] { try chunk.withUnsafeBytes { try seal($0) } }

  /// The final message: the node's signature, under TAG_FINAL.
  public func finish() throws -> [UInt8] {
    guard sent == head.payloadLength else { throw EnvelopeError.misuse("finish after \(sent) of \(head.payloadLength) bytes") }
    let sig = try Sodium.sign(Envelope.signedBytes(headHash: headHash, payloadHash: payloadHasher.finish()), secretKey: signingKey)
    return try stream.push(sig, ad: headHash, final: true)
  }
}

/// Opens an envelope chunk by chunk, checking it against what the receiver expects.
public final class EnvelopeOpener {
  public let head: Envelope.Head
  let headHash: [UInt8]
  let stream: any ChunkPull
  let payloadHasher = PayloadDigest()
  let signerPublicKey: [UInt8]
  var received: UInt64 = 0
  public private(set) var chunksOpened = 0
  public private(set) var verified = false

  /// - Parameters:
  ///   - expected: federation, round and base the receiver is collecting; `nodeID` is the sender's
  ///     authenticated identity (e.g. from the CURVE session), or nil when it arrived through a relay.
  ///   - signerKey: looks up the Ed25519 public key of an enrolled node by its id.
  public init(headBytes: [UInt8], expected: Envelope.Context, aggregationPublicKey: [UInt8], aggregationSecretKey: [UInt8],
              sessionNodeID: [UInt8]?, signerKey: ([UInt8]) -> [UInt8]?) throws {
    let h: Envelope.Head
    do { h = try Envelope.Head.decode(headBytes) } catch let e as DecodeError { throw EnvelopeError.decode(e) }
    guard h.context.federation == expected.federation else { throw EnvelopeError.wrongFederation(expected: expected.federation, got: h.context.federation) }
    guard h.context.round == expected.round else { throw EnvelopeError.wrongRound(expected: expected.round, got: h.context.round) }
    guard h.context.baseHash == expected.baseHash else { throw EnvelopeError.wrongBase }
    if let s = sessionNodeID, s != h.context.nodeID { throw EnvelopeError.wrongNode }
    guard let pk = signerKey(h.context.nodeID) else { throw EnvelopeError.unknownNode(hex(h.context.nodeID)) }
    var key: [UInt8]
    do { key = try Sodium.sealOpen(h.sealedKey, publicKey: aggregationPublicKey, secretKey: aggregationSecretKey) } catch { throw EnvelopeError.cannotOpenKey }
    defer { Sodium.wipe(&key) }
    guard key.count == SecretStream.keyBytes else { throw EnvelopeError.cannotOpenKey }
    switch h.suite {
    case .xchacha20poly1305: stream = try SecretStreamPull(key: key, header: h.streamHeader)
    case .aes256gcm: stream = try GCMStreamPull(key: key)
    }
    head = h
    headHash = SHA256.hash(headBytes)
    signerPublicKey = pk
  }

  /// Decrypts the next payload chunk.
  public func open(_ cipher: [UInt8]) throws -> [UInt8] {
    try cipher.withUnsafeBytes { c in
      try [UInt8](unsafeUninitializedCapacity: max(0, c.count - SecretStream.overhead)) { out, n in
        try open(c, into: UnsafeMutableRawBufferPointer(out))
        n = out.count
      }
    }
  }

  /// Bytes the next chunk's plaintext has (0 when every payload byte was received).
  public var nextChunkBytes: Int { Int(min(UInt64(head.chunkSize), head.payloadLength - received)) }

  /// Decrypts the next payload chunk into `out` (`cipher.count - SecretStream.overhead` bytes), e.g.
  /// straight into the receiver's staging buffer. On any failure nothing counts as received.
  public func open(_ cipher: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws {
    let index = chunksOpened
    guard received < head.payloadLength else { throw EnvelopeError.badChunk(index: index, reason: "more chunks than the payload length allows") }
    let expected = nextChunkBytes
    guard cipher.count - SecretStream.overhead == expected, out.count == expected else {
      throw EnvelopeError.badChunk(index: index, reason: "\(cipher.count - SecretStream.overhead) bytes, expected \(expected)")
    }
    // The payload digest is fed piece by piece during the decryption (while each piece is in the cache);
    // a chunk that fails authentication is taken out of it again.
    let saved = payloadHasher.saved()
    let tag: UInt8
    do {
      tag = try stream.pull(cipher, ad: headHash, into: out) { [payloadHasher] in payloadHasher.update($0) }
    } catch {
      payloadHasher.restore(saved)
      throw EnvelopeError.badChunk(index: index, reason: "authentication failed (tampered, reordered or replayed)")
    }
    guard tag != SecretStream.tagFinal else {
      payloadHasher.restore(saved)
      throw EnvelopeError.truncated("final tag at chunk \(index) after \(received) of \(head.payloadLength) bytes")
    }
    received += UInt64(expected)
    chunksOpened += 1
  }

  /// Checks the final message: all bytes received, TAG_FINAL, and the node's signature.
  public func finish(_ cipher: [UInt8]) throws {
    guard received == head.payloadLength else { throw EnvelopeError.truncated("\(received) of \(head.payloadLength) payload bytes") }
    let sig: [UInt8], final: Bool
    do { (sig, final) = try stream.pull(cipher, ad: headHash) } catch { throw EnvelopeError.badChunk(index: chunksOpened, reason: "final message failed authentication") }
    guard final else { throw EnvelopeError.truncated("the last message is not marked final") }
    guard Sodium.verify(sig, message: Envelope.signedBytes(headHash: headHash, payloadHash: payloadHasher.finish()), publicKey: signerPublicKey) else {
      throw EnvelopeError.badSignature
    }
    verified = true
  }
}
