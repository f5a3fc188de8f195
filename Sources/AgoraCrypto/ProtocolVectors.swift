import AgoraWire
import Foundation

/// The test vectors of Protocol/vectors: one per message type, and an update envelope made with fixed
/// keys, nonces and stream key. `agora protocol vectors` writes them; the tests decode and re-encode them.
public enum ProtocolVectors {
  public static func hash(_ byte: UInt8) -> [UInt8] { [UInt8](repeating: byte, count: 32) }

  /// (name, message) for every message type.
  public static let messages: [(String, Message)] = [
    ("join", .join(name: "Charles University", software: "agora/0.1.0", latestVersion: hash(0x11), role: 0,
                   terms: TrainingTerms(tokenizerHash: hash(0x12), modelHash: hash(0x13), innerSteps: 500, batch: 8, learningRateBits: Float(3e-4).bitPattern, rounds: 100))),
    ("welcome", .welcome(federation: "openeurollm", heartbeatMillis: 1000, liveness: 3, chunkSize: 1 << 20, credit: 4, aggregationKey: hash(0x22))),
    ("round", .round(round: 42, baseHash: hash(0x33), innerSteps: 500, batch: 8, learningRateBits: Float(3e-4).bitPattern, deadlineMillis: 1_790_000_000_000, modelBytes: 55_566_336, patchFrom: hash(0x32), patchHash: hash(0x34), shardHash: hash(0x35), version: 41,
                           signature: [UInt8](repeating: 0x36, count: 64))),
    ("fetch", .fetch(hash: hash(0x33), fromChunk: 3, credit: 4)),
    ("blob_chunk", .blobChunk(hash: hash(0x33), index: 3, count: 54, payload: Payload(Array("model bytes".utf8)))),
    ("upload_begin", .uploadBegin(transfer: 0x0102_0304_0506_0708, round: 42, chunks: 54, head: [0xAA, 0xBB, 0xCC])),
    ("upload_chunk", .uploadChunk(transfer: 0x0102_0304_0506_0708, index: 0, payload: Payload(Array("sealed chunk".utf8)))),
    ("upload_end", .uploadEnd(transfer: 0x0102_0304_0506_0708, final: [0xDD, 0xEE], tokens: 2_048_000, steps: 500, lossBits: Float(3.25).bitPattern, cpuMillis: 93_000,
                                languages: [.init(language: "cs", tokens: 1_024_000), .init(language: "pl", tokens: 1_024_000)])),
    ("ack", .ack(transfer: 0x0102_0304_0506_0708, next: 5, credit: 4)),
    ("heartbeat", .heartbeat),
    ("leave", .leave(kind: .session, reason: "shutting down")),
    ("leave_finished", .leave(kind: .finished, reason: "the federation's rounds are over")),
    ("error", .error(code: ErrorCode.notEnrolled.rawValue, message: "key 3f2a… is not enrolled", subject: .none)),
    ("error_transfer", .error(code: ErrorCode.duplicate.rawValue, message: "this node already delivered an update for round 42", subject: .transfer(0x0102_0304_0506_0708))),
    ("error_blob", .error(code: ErrorCode.unknownVersion.rawValue, message: "no blob", subject: .blob(hash(0x33)))),
    ("error_round", .error(code: ErrorCode.internalError.rawValue, message: "node abandons round 42", subject: .round(42))),
    ("evaluation", .evaluation(version: 41, hash: hash(0x33), scores: [LanguageScore(language: "cs", bitsPerByte: 3.25, bytes: 4096, alone: 3.5),
                                                                 LanguageScore(language: "pl", bitsPerByte: 3.375, bytes: 4000)],
                               signature: [UInt8](repeating: 0x37, count: 64))),
    ("counts", .counts(vocabulary: 4, minimum: 10, payload: Payload([0x0A, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x27, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]))),
    ("vocabulary", .vocabulary(remaining: 1, signature: VocabularyVector.signature, payload: Payload(VocabularyVector.sealed))),
    ("tokenizer", .tokenizer(hash: Sodium.blake2b(VocabularyVector.tokenizer), signature: VocabularyVector.tokenizerSignature,
                             payload: Payload(VocabularyVector.tokenizer))),
    ("declaration", .declaration(hash: Sodium.blake2b(VocabularyVector.declaration), signature: VocabularyVector.declarationSignature,
                                 payload: Payload(VocabularyVector.declaration))),
    ("enrol", .enrol(token: InvitationVector.token, name: InvitationVector.name, contact: InvitationVector.contact,
                     signKey: InvitationVector.donorSign.publicKey, curveKey: InvitationVector.donorCurve, signature: InvitationVector.proof)),
    ("enrolled", .enrolled(node: Envelope.fingerprint(InvitationVector.donorSign.publicKey), payload: Payload(InvitationVector.bundle))),
    ("secagg_keys", .secaggKeys(round: 42, keys: keys(0x40))),
    ("secagg_roster", .secaggRoster(round: 42, terms: SecAggRosterTerms(ringBits: 12, neighbours: 0, thresholdPermille: 666, ranges: 2, rows: 1),
                                    participants: [SecAggParticipant(node: hash(0x01), keys: keys(0x40)), SecAggParticipant(node: hash(0x02), keys: keys(0x50))],
                                    payload: Payload([0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x3F]))),
    ("secagg_shares", .secaggShares(round: 42, shares: [SecAggShareBox(peer: hash(0x02), box: [UInt8](repeating: 0x61, count: 198))])),
    ("secagg_unmask", .secaggUnmask(round: 42, survivors: [hash(0x02), hash(0x03)], dropped: [hash(0x04)])),
    ("secagg_reveal", .secaggReveal(round: 42, shares: [SecAggRevealed(about: hash(0x02), kind: 0, x: 1, share: hash(0x71)),
                                                      SecAggRevealed(about: hash(0x04), kind: 1, x: 1, share: hash(0x72))])),
  ]

  /// VOCABULARY's and TOKENIZER's vectors are what a node and a coordinator send (SPEC §4.4): a table signed with
  /// the node's key (seed 01…01) and sealed to the coordinator's aggregation key (box seed 02…02, ephemeral seed
  /// 04…04, as `crypto_box_seal` builds it), and a tokenizer with its BLAKE2b-256 signed by the coordinator
  /// (signing seed 07…07, statement.json's), for federation "openeurollm". messages.json lists these inputs.
  public enum VocabularyVector {
    public static let federation = "openeurollm"
    public static let nodeSignSeed = [UInt8](repeating: 0x01, count: 32)
    public static let coordinatorBoxSeed = [UInt8](repeating: 0x02, count: 32)
    public static let ephemeralSeed = [UInt8](repeating: 0x04, count: 32)
    public static let coordinatorSignSeed = [UInt8](repeating: 0x07, count: 32)
    /// "AGVC" 1, language "de", 5 octets, 5 scalars, 1 document, 1 entry: "a" counted 3 times.
    public static let table: [UInt8] = Array("AGVC".utf8) + [1, 2, 0x64, 0x65, 5, 5, 1, 1, 1, 0x61, 3]
    public static let tokenizer: [UInt8] = Array("{\"model\":{}}".utf8)
    static let signature = (try? Sodium.sign(VocabularyStatement.table(federation: federation, table: table),
                                              secretKey: Sodium.signKeypair(seed: nodeSignSeed).secretKey)) ?? []
    static let sealed = (try? Sodium.seal(table, to: Sodium.boxKeypair(seed: coordinatorBoxSeed).publicKey, ephemeralSeed: ephemeralSeed)) ?? []
    static let tokenizerSignature = (try? Sodium.sign(VocabularyStatement.tokenizer(federation: federation, hash: Sodium.blake2b(tokenizer)),
                                                       secretKey: Sodium.signKeypair(seed: coordinatorSignSeed).secretKey)) ?? []
    /// DECLARATION's vector (SPEC §4.5): a declaration's JSON signed with the node's key (seed 01…01).
    public static let declaration: [UInt8] = Array(("{\"declarant\":\"Charles University\",\"format\":\"agora-declaration-1\",\"sources\":[{\"category\":\"public_dataset\","
      + "\"confidential\":false,\"content_types\":[\"news\"],\"domains\":[],\"languages\":[\"cs\"],\"license\":\"CC-BY-4.0\",\"modality\":\"text\","
      + "\"name\":\"Czech news\",\"url\":\"https://example.com/news\"}]}").utf8)
    static let declarationSignature = (try? Sodium.sign(DeclarationStatement.bytes(federation: federation, payload: declaration),
                                                         secretKey: Sodium.signKeypair(seed: nodeSignSeed).secretKey)) ?? []
    /// The inputs a checker needs, as JSON members.
    static var inputs: [String: String] {
      [
        "vocabulary": "\"inputs\": {\"federation\": \"\(federation)\", \"table\": \"\(hex(table))\", \"node_sign_seed\": \"\(hex(nodeSignSeed))\", "
          + "\"coordinator_box_seed\": \"\(hex(coordinatorBoxSeed))\", \"ephemeral_seed\": \"\(hex(ephemeralSeed))\"}",
        "tokenizer": "\"inputs\": {\"federation\": \"\(federation)\", \"coordinator_sign_seed\": \"\(hex(coordinatorSignSeed))\"}",
        "declaration": "\"inputs\": {\"federation\": \"\(federation)\", \"node_sign_seed\": \"\(hex(nodeSignSeed))\"}",
      ]
    }
  }

  /// ENROL's and ENROLLED's vectors (SPEC §2.2): an invitation for federation "openeurollm" signed by the coordinator
  /// (signing seed 07…07), 3 uses, expiring at 1,800,000,000 (2027-01-15), id 21…21, invitation key from box
  /// seed 08…08; the donor's card: signing seed 09…09, CurveZMQ key from box seed 0a…0a.
  public enum InvitationVector {
    public static let federation = "openeurollm"
    public static let coordinatorSignSeed = [UInt8](repeating: 0x07, count: 32)
    public static let inviteBoxSeed = [UInt8](repeating: 0x08, count: 32)
    public static let donorSignSeed = [UInt8](repeating: 0x09, count: 32)
    public static let donorCurveSeed = [UInt8](repeating: 0x0A, count: 32)
    public static let name = "Volunteer"
    public static let contact = "volunteer@example.org"
    static let coordinator = (try? Sodium.signKeypair(seed: coordinatorSignSeed)) ?? (publicKey: [], secretKey: [])
    public static let donorSign = (try? Sodium.signKeypair(seed: donorSignSeed)) ?? (publicKey: [], secretKey: [])
    public static let donorCurve = (try? Sodium.boxKeypair(seed: donorCurveSeed).publicKey) ?? []
    public static let token: [UInt8] = {
      guard let key = try? Sodium.boxKeypair(seed: inviteBoxSeed).publicKey else { return [] }
      var t = InvitationToken(role: InvitationToken.donor, uses: 3, expires: 1_800_000_000, id: [UInt8](repeating: 0x21, count: 16),
                              inviteKey: key, signature: [])
      t.signature = (try? Sodium.sign(InvitationToken.statement(federation: federation, signedPart: t.signedPart), secretKey: coordinator.1)) ?? []
      return t.bytes
    }()
    public static let proof = (try? Sodium.sign(EnrolmentStatement.bytes(federation: federation, token: token, name: name, contact: contact, curveKey: donorCurve),
                                                secretKey: donorSign.1)) ?? []
    public static let bundle: [UInt8] = Array("{\"federation.toml\":\"[federation]\\nid = \\\"openeurollm\\\"\\n\",\"tokenizer.json\":\"{\\\"model\\\":{}}\"}".utf8)
    static var inputs: [String: String] {
      let common = "\"federation\": \"\(federation)\", \"coordinator_sign_seed\": \"\(hex(coordinatorSignSeed))\", \"invite_box_seed\": \"\(hex(inviteBoxSeed))\", "
        + "\"donor_sign_seed\": \"\(hex(donorSignSeed))\", \"donor_curve_seed\": \"\(hex(donorCurveSeed))\""
      return ["enrol": "\"inputs\": {\(common)}", "enrolled": "\"inputs\": {\(common)}"]
    }
  }

  static func keys(_ b: UInt8) -> SecAggKeys {
    SecAggKeys(cPublic: hash(b), sPublic: hash(b + 1), commitment: hash(b + 2), signature: [UInt8](repeating: b + 3, count: 64))
  }

  /// Malformed messages, each with the error a receiver must give (SPEC §3: the first failing check) and the
  /// ERROR code a coordinator answers with.
  public static var malformed: [(name: String, frames: [[UInt8]])] {
    let v = Wire.versionFrame
    func body(_ m: Message) -> [UInt8] { m.frames()[1] }
    func with(_ m: Message, _ edit: (inout [UInt8]) -> Void) -> [UInt8] { var b = body(m); edit(&b); return b }
    let terms = TrainingTerms(tokenizerHash: hash(0x12), modelHash: hash(0x13), innerSteps: 500, batch: 8, learningRateBits: Float(3e-4).bitPattern, rounds: 100)
    let join = Message.join(name: "A", software: "s", latestVersion: hash(0), role: 0, terms: terms)
    let end = { (langs: [String]) in
      Message.uploadEnd(transfer: 1, final: [1], tokens: 1, steps: 1, lossBits: 0, cpuMillis: 0, languages: langs.map { LanguageTokens(language: $0, tokens: 1) })
    }
    var welcome = ByteWriter()
    welcome.u8(MessageType.welcome.rawValue); welcome.string("f"); welcome.u32(5); welcome.u8(3); welcome.u32(1 << 20); welcome.u16(4); welcome.raw(hash(0x22))
    var fetch = ByteWriter()
    fetch.u8(MessageType.fetch.rawValue); fetch.raw(hash(0x33)); fetch.u32(0); fetch.u16(0)
    var chunk = ByteWriter()
    chunk.u8(MessageType.blobChunk.rawValue); chunk.raw(hash(0x33)); chunk.u32(5); chunk.u32(5)
    var begin = ByteWriter()
    begin.u8(MessageType.uploadBegin.rawValue); begin.u64(1); begin.u64(42); begin.u32(0); begin.blob([0xAA])
    return [
      ("one_frame", [v]),
      ("four_frames", [v, [0x0A], [1], [2]]),
      ("version_1", [[0x41, 0x47, 0x52, 0x01], [0x0A]]),
      ("not_agora", [Array("HTTP".utf8), [0x0A]]),
      ("empty_body", [v, []]),
      ("body_too_large", [v, [0x0A] + [UInt8](repeating: 0, count: Wire.maxBody)]),
      ("unknown_type", [v, [0x7F]]),
      ("heartbeat_with_payload", [v, [0x0A], [1]]),
      ("upload_chunk_without_payload", [v, [0x07, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]),
      ("blob_chunk_empty_payload", [v, Array(chunk.bytes.prefix(1 + 32)) + [0, 0, 0, 0, 1, 0, 0, 0], []]),
      ("short_join_name", [v, [0x01, 200, 0, 0x41, 0x42, 0x43]]),
      ("leave_reason_too_long", [v, [0x0B, 0, 0x60, 0xEA, 0x41, 0x42, 0x43]]),
      ("leave_reason_invalid_utf8", [v, [0x0B, 0, 2, 0, 0xC3, 0x28]]),
      ("leave_unknown_kind", [v, [0x0B, 2, 0, 0]]),
      ("heartbeat_trailing_octet", [v, [0x0A, 0]]),
      ("join_role_2", [v, with(join) { $0[1 + 2 + 1 + 2 + 1 + 32] = 2 }]),
      ("welcome_heartbeat_5ms", [v, welcome.bytes]),
      ("fetch_zero_credit", [v, fetch.bytes]),
      ("blob_chunk_index_past_count", [v, chunk.bytes, [1]]),
      ("upload_begin_zero_chunks", [v, begin.bytes]),
      ("upload_end_uppercase_language", [v, body(end(["DE"]))]),
      ("upload_end_languages_out_of_order", [v, body(end(["pl", "de"]))]),
      ("error_unknown_subject", [v, [0x0C, 1, 0, 0, 0, 4]]),
      ("evaluation_no_languages", [v, [0x0E] + [UInt8](repeating: 0, count: 8) + hash(0x33) + [0] + [UInt8](repeating: 0x37, count: 64)]),
      ("evaluation_nan_score", [v, body(.evaluation(version: 1, hash: hash(0x33), scores: [LanguageScore(language: "de", bitsPerByte: .nan, bytes: 10)],
                                                    signature: [UInt8](repeating: 0x37, count: 64)))]),
      ("counts_payload_not_vocabulary_size", [v, [0x0D, 4, 0, 0, 0, 10, 0, 0, 0], [1, 0, 0, 0]]),
      ("counts_without_payload", [v, [0x0D, 1, 0, 0, 0, 10, 0, 0, 0]]),
      ("vocabulary_without_payload", [v, [0x14, 0, 0] + [UInt8](repeating: 1, count: 64)]),
      ("vocabulary_short_signature", [v, [0x14, 0, 0] + [UInt8](repeating: 1, count: 63), [1]]),
      ("tokenizer_short_hash", [v, [0x15] + [UInt8](repeating: 1, count: 95), [0x7B]]),
      ("declaration_without_payload", [v, [0x16] + [UInt8](repeating: 1, count: 96)]),
      ("declaration_short_signature", [v, [0x16] + [UInt8](repeating: 1, count: 95), [0x7B]]),
      ("enrol_short_token", [v, [0x17] + [UInt8](repeating: 1, count: 127)]),
      ("enrol_empty_name", [v, [0x17] + [UInt8](repeating: 1, count: 128) + [0, 0, 0, 0] + [UInt8](repeating: 2, count: 128)]),
      ("enrolled_without_payload", [v, [0x18] + [UInt8](repeating: 1, count: 32)]),
      ("secagg_roster_unsorted", [v, body(.secaggRoster(round: 1, terms: SecAggRosterTerms(ringBits: 12, neighbours: 0, thresholdPermille: 666, ranges: 1, rows: 0),
                                                       participants: [SecAggParticipant(node: hash(0x02), keys: keys(0x40)), SecAggParticipant(node: hash(0x01), keys: keys(0x50))],
                                                       payload: Payload([0, 0, 0x80, 0x3F]))), [0, 0, 0x80, 0x3F]]),
      ("secagg_roster_ring_bits_1", [v, body(.secaggRoster(round: 1, terms: SecAggRosterTerms(ringBits: 1, neighbours: 0, thresholdPermille: 666, ranges: 1, rows: 0),
                                                          participants: [SecAggParticipant(node: hash(0x01), keys: keys(0x40)), SecAggParticipant(node: hash(0x02), keys: keys(0x50))],
                                                          payload: Payload([0, 0, 0x80, 0x3F]))), [0, 0, 0x80, 0x3F]]),
      ("secagg_roster_payload_size", [v, body(.secaggRoster(round: 1, terms: SecAggRosterTerms(ringBits: 12, neighbours: 0, thresholdPermille: 666, ranges: 2, rows: 0),
                                                           participants: [SecAggParticipant(node: hash(0x01), keys: keys(0x40)), SecAggParticipant(node: hash(0x02), keys: keys(0x50))],
                                                           payload: Payload([0, 0, 0x80, 0x3F]))), [0, 0, 0x80, 0x3F]]),
      ("secagg_unmask_both_ways", [v, body(.secaggUnmask(round: 1, survivors: [hash(0x02)], dropped: [hash(0x02)]))]),
      ("secagg_reveal_point_0", [v, body(.secaggReveal(round: 1, shares: [SecAggRevealed(about: hash(0x02), kind: 0, x: 0, share: hash(0x71))]))]),
      ("secagg_shares_same_peer_twice", [v, body(.secaggShares(round: 1, shares: [SecAggShareBox(peer: hash(0x02), box: [1]), SecAggShareBox(peer: hash(0x02), box: [2])]))]),
    ]
  }

  public static func malformedJSON() -> String {
    var parts: [String] = []
    for (name, frames) in malformed {
      var text = "(decodes: not malformed)", code: UInt16 = 0
      do {
        _ = try Message.decode(frames)
      } catch let e as WireError {
        text = e.description; code = e.code.rawValue
      } catch {
        text = "\(error)"
      }
      let f = frames.map { "\"\(hex($0))\"" }.joined(separator: ", ")
      parts.append("    {\"name\": \"\(name)\", \"frames\": [\(f)], \"error\": \(jsonString(text)), \"error_code\": \(code)}")
    }
    return "{\n  \"protocol_version\": \(Wire.protocolVersion),\n  \"description\": \"Malformed messages: a receiver must refuse each with this error (the first failing check, SPEC §3) and a coordinator answers ERROR(error_code) with subject none\",\n  \"messages\": [\n" + parts.joined(separator: ",\n") + "\n  ]\n}\n"
  }

  /// A signed version statement (SPEC §5.2) with a fixed coordinator signing seed.
  public static func statementJSON() throws -> String {
    let seed = [UInt8](repeating: 0x07, count: 32)
    let keys = try Sodium.signKeypair(seed: seed)
    let statement = VersionStatement.bytes(federation: "openeurollm", number: 41, hash: hash(0x33), parent: hash(0x32))
    let sig = try Sodium.sign(statement, secretKey: keys.secretKey)
    return """
    {
      "description": "A version statement and the coordinator's Ed25519 signature of it (SPEC §5.2); ROUND carries number, hash (base hash), parent (patch from) and signature",
      "coordinator_sign_seed": "\(hex(seed))",
      "coordinator_sign_public": "\(hex(keys.publicKey))",
      "federation": "openeurollm",
      "number": 41,
      "hash": "\(hex(hash(0x33)))",
      "parent": "\(hex(hash(0x32)))",
      "statement": "\(hex(statement))",
      "signature": "\(hex(sig))"
    }

    """
  }

  public static func messagesJSON() -> String {
    var parts: [String] = []
    for (name, m) in messages {
      let frames = m.frames().map { "\"\(hex($0))\"" }.joined(separator: ", ")
      parts.append("    {\"name\": \"\(name)\", \"type\": \(m.type.rawValue), \"frames\": [\(frames)]\((VocabularyVector.inputs[name] ?? InvitationVector.inputs[name]).map { ", " + $0 } ?? "")}")
    }
    return "{\n  \"protocol_version\": \(Wire.protocolVersion),\n  \"messages\": [\n" + parts.joined(separator: ",\n") + "\n  ]\n}\n"
  }

  /// Fixed inputs of the envelope vector.
  public struct EnvelopeInputs {
    public let nodeSeed = [UInt8](repeating: 0x01, count: 32)
    public let coordinatorSeed = [UInt8](repeating: 0x02, count: 32)
    public let streamKey = [UInt8](repeating: 0x03, count: 32)
    public let ephemeralSeed = [UInt8](repeating: 0x04, count: 32)
    public let streamHeader = [UInt8](repeating: 0x05, count: 24)
    public let payload: [UInt8] = (0..<2500).map { UInt8(truncatingIfNeeded: $0) }
    public let chunkSize = 1024
    public init() {}
  }

  /// The envelope vector of a cipher suite: (node keys, coordinator keys, context, head, chunks, final).
  public static func envelope(suite: EnvelopeSuite = .xchacha20poly1305) throws -> (node: ([UInt8], [UInt8]), coordinator: ([UInt8], [UInt8]), context: Envelope.Context,
                                                                                   head: [UInt8], chunks: [[UInt8]], final: [UInt8]) {
    let i = EnvelopeInputs()
    let node = try Sodium.signKeypair(seed: i.nodeSeed)
    let coord = try Sodium.boxKeypair(seed: i.coordinatorSeed)
    let ctx = Envelope.Context(federation: "openeurollm", round: 42, baseHash: hash(0x33), nodeID: Envelope.fingerprint(node.publicKey))
    let s = try EnvelopeSealer(context: ctx, payloadLength: UInt64(i.payload.count), chunkSize: i.chunkSize, recipient: coord.publicKey,
                               signingSecretKey: node.secretKey, suite: suite,
                               fixed: .init(streamKey: i.streamKey, ephemeralSeed: i.ephemeralSeed, streamHeader: i.streamHeader))
    var chunks: [[UInt8]] = []
    var o = 0
    while o < i.payload.count {
      chunks.append(try s.seal(Array(i.payload[o..<min(i.payload.count, o + i.chunkSize)])))
      o += i.chunkSize
    }
    return (node, coord, ctx, s.headBytes, chunks, try s.finish())
  }

  public static func envelopeJSON() throws -> String {
    let i = EnvelopeInputs()
    let v = try envelope()
    let g = try envelope(suite: .aes256gcm)
    return """
    {
      "description": "Update envelope (head version 5) with fixed keys and randomness (Protocol/SPEC.md, Update envelope): suite 0 (XChaCha20-Poly1305 secretstream) here, suite 1 (AES-256-GCM, the same inputs but no stream header) under aes256gcm",
      "suite": 0,
      "node_sign_seed": "\(hex(i.nodeSeed))",
      "node_sign_public": "\(hex(v.node.0))",
      "node_id": "\(hex(v.context.nodeID))",
      "coordinator_box_seed": "\(hex(i.coordinatorSeed))",
      "coordinator_box_public": "\(hex(v.coordinator.0))",
      "stream_key": "\(hex(i.streamKey))",
      "ephemeral_seed": "\(hex(i.ephemeralSeed))",
      "stream_header": "\(hex(i.streamHeader))",
      "federation": "\(v.context.federation)",
      "round": \(v.context.round),
      "base_hash": "\(hex(v.context.baseHash))",
      "chunk_size": \(i.chunkSize),
      "payload": "bytes 0, 1, ..., 255, 0, 1, ... (2500 bytes: i mod 256)",
      "head": "\(hex(v.head))",
      "chunks": [\(v.chunks.map { "\"\(hex($0))\"" }.joined(separator: ", "))],
      "final": "\(hex(v.final))",
      "aes256gcm": {
        "suite": 1,
        "stream_header": "\(hex(g.head.suffix(SecretStream.headerBytes)))",
        "nonces": [\((0...g.chunks.count).map { "\"\(hex(GCMStream.nonce(UInt64($0))))\"" }.joined(separator: ", "))],
        "head": "\(hex(g.head))",
        "head_hash": "\(hex(SHA256.hash(g.head)))",
        "chunks": [\(g.chunks.map { "\"\(hex($0))\"" }.joined(separator: ", "))],
        "final": "\(hex(g.final))"
      }
    }

    """
  }
}
