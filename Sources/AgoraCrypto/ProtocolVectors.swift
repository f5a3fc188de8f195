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
  ]

  public static func messagesJSON() -> String {
    var parts: [String] = []
    for (name, m) in messages {
      let frames = m.frames().map { "\"\(hex($0))\"" }.joined(separator: ", ")
      parts.append("    {\"name\": \"\(name)\", \"type\": \(m.type.rawValue), \"frames\": [\(frames)]}")
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

  /// The envelope vector: (node keys, coordinator keys, context, head, chunks, final).
  public static func envelope() throws -> (node: ([UInt8], [UInt8]), coordinator: ([UInt8], [UInt8]), context: Envelope.Context,
                                           head: [UInt8], chunks: [[UInt8]], final: [UInt8]) {
    let i = EnvelopeInputs()
    let node = try Sodium.signKeypair(seed: i.nodeSeed)
    let coord = try Sodium.boxKeypair(seed: i.coordinatorSeed)
    let ctx = Envelope.Context(federation: "openeurollm", round: 42, baseHash: hash(0x33), nodeID: Envelope.fingerprint(node.publicKey))
    let s = try EnvelopeSealer(context: ctx, payloadLength: UInt64(i.payload.count), chunkSize: i.chunkSize, recipient: coord.publicKey,
                               signingSecretKey: node.secretKey,
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
    return """
    {
      "description": "Update envelope (head version 4) with fixed keys and randomness (Protocol/SPEC.md, Update envelope)",
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
      "final": "\(hex(v.final))"
    }

    """
  }
}
