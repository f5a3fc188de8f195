import AgoraCrypto
import AgoraData
import AgoraRounds
import AgoraNode
import AgoraModel
import AgoraTransport
import AgoraWire
import Foundation

/// A node for the coordinator benchmark: it speaks the whole protocol (join; fetch the announced version's
/// patch when it holds the parent, else the whole version, checking the blob's hash; seal, sign and stream an
/// update) but skips training and everything a real node does with the model (applying the patch, hashing
/// the result): it holds no model, only the hash of the version it would have. Its update is a fixed
/// pseudo-random Δ made once, encoded once (plain mode) or anew each round with error feedback, as a real
/// node encodes after training (`encodeEachRound`, and always under secure aggregation, whose masks change
/// every round). Memory: Δ, its error feedback, the encoded update and a chunk.
public final class InstantNode {
  let endpoint: Endpoint
  let identity: Identity
  let federation: String
  public var log: (String) -> Void = { _ in }

  let terms: TrainingTerms

  public init(endpoint: String, coordinator: EnrolmentCard, identity: Identity, federation: String, terms: TrainingTerms) throws {
    self.terms = terms
    self.identity = identity
    self.federation = federation
    self.endpoint = try Endpoint.client(connect: endpoint, serverKey: coordinator.curvePublic,
                                        keys: CurveKeys(publicKey: identity.card.curvePublic, secretKey: identity.curveSecret))
  }

  /// With secure aggregation (`secure`): the node's side of it, and its fixed Δ as floats (masked anew each round).
  var secure: SecureAggregationClient? = nil
  var delta: [Float] = []
  /// Plain mode: encode Δ anew every round with error feedback (what a real node does after training) instead
  /// of sending the update encoded once.
  var encodeEachRound = false
  var errorFeedback: [Float] = []
  /// Send second moments after the update (`rounds.moment_weighting`): here Δ² per value, as a stand-in.
  var moments = false
  /// The moments' trailer, made once: Δ does not change from round to round.
  var momentTrailer: [UInt8] = []
  /// The tokens each update claims: one step of the federation's batch of whole context windows (what the
  /// coordinator accepts for one step).
  var tokens: UInt64 = 2048

  public func run(format: DeltaFormat) throws {
    endpoint.send(.join(name: identity.card.name, software: "agora-bench", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: terms))
    var chunk = 1 << 20, key: [UInt8] = []
    var payload: [UInt8] = []
    var have: [UInt8] = []
    // Heartbeats, so the coordinator does not expire this node while it fetches or seals.
    let stop = ManagedAtomicFlag()
    defer { stop.set() }
    Thread { [endpoint] in
      while !stop.isSet { Thread.sleep(forTimeInterval: 1); endpoint.send(.heartbeat) }
    }.start()
    let end = Date(timeIntervalSinceNow: 3600)
    while Date() < end {
      guard let m = endpoint.receive(timeout: 1), case .success(let msg) = m.message else { continue }
      switch msg {
      case .welcome(_, _, _, let c, _, let k):
        chunk = Int(c); key = k
      case .round(let r, let base, _, _, _, let deadlineMs, let bytes, let patchFrom, let patchHash, _, _, _):
        let t0 = Date()
        let deadline = Date(timeIntervalSince1970: Double(deadlineMs) / 1000)
        let secureRound = try secure?.setup(round: r, deadline: deadline)
        let viaPatch = !have.isEmpty && patchFrom == have && patchHash != Message.noHash
        let fetched = try BlobFetcher(endpoint: endpoint).fetch(hash: viaPatch ? patchHash : base) { _ in }
        have = base
        let t1 = Date()
        if delta.isEmpty {
          let n = Int(bytes) / 4
          var g = fnv1a(identity.card.fingerprint)
          delta = (0..<n).map { _ -> Float in
            g = g &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: g) >> 40) * 1e-12
          }
          payload = delta.withUnsafeBufferPointer { DeltaCodec.encode($0, format: format) }
        }
        if encodeEachRound && secureRound == nil {
          // As a node does: Δ plus the error feedback, encoded; what int8 did not carry is the new feedback.
          if errorFeedback.isEmpty { errorFeedback = [Float](repeating: 0, count: delta.count) }
          var x = delta
          addFeedback(&x)
          payload = x.withUnsafeBufferPointer { xb in errorFeedback.withUnsafeMutableBufferPointer { DeltaCodec.encode(xb, format: format, errorFeedback: format.quantised ? $0 : nil) } }
        }
        if let secure, let secureRound {
          // As a node does: Δ plus the error feedback, encoded in the ring; what it did not carry is the new feedback.
          if errorFeedback.isEmpty { errorFeedback = [Float](repeating: 0, count: delta.count) }
          var x = delta
          addFeedback(&x)
          payload = try x.withUnsafeMutableBufferPointer { try secure.encode($0, round: r, secure: secureRound, fraction: 1, relative: nil, deadline: deadline) }
          errorFeedback = x
        }
        if moments && secureRound == nil && payload.count == DeltaCodec.encodedSize(count: delta.count, format: format) {
          if momentTrailer.isEmpty { momentTrailer = delta.map { $0 * $0 }.withUnsafeBufferPointer { BlockMoments.trailer($0) } }
          payload += momentTrailer
        }
        let sealer = try EnvelopeSealer(context: .init(federation: federation, round: r, baseHash: base, nodeID: identity.card.nodeID),
                                        payloadLength: UInt64(payload.count), chunkSize: chunk, recipient: key, signingSecretKey: identity.signSecret)
        var sender = UploadSender(endpoint: endpoint, transfer: r, round: r)
        sender.deadline = Date(timeIntervalSince1970: Double(deadlineMs) / 1000)
        sender.maxRetries = 10_000
        _ = try payload.withUnsafeBytes { try sender.send(sealer: sealer, tokens: tokens, steps: 1, loss: 1, payload: $0) }
        log(String(format: "round %llu: fetched %d B%@ in %.2f s, sent %d B in %.2f s", r, fetched, viaPatch ? " (patch)" : "",
                   t1.timeIntervalSince(t0), payload.count, Date().timeIntervalSince(t1)))
        if let secure, let secureRound { _ = try secure.reveal(round: r, party: secureRound.party, deadline: deadline) }
      case .leave(.finished, _):
        return
      default:
        continue
      }
    }
  }

  /// x += the error feedback.
  func addFeedback(_ x: inout [Float]) {
    x.withUnsafeMutableBufferPointer { xb in
      errorFeedback.withUnsafeBufferPointer { e in
        for i in 0..<xb.count { xb[i] += e[i] }
      }
    }
  }

  public func shutdown() { endpoint.close() }

  /// `agora transport instant-node`: joins the federation of `federation` (a federation.toml) as the identity in
  /// `identity`, and answers every round with a fixed update (fp32 or int8), without training, until it ends.
  public static func serve(federation: String, identity: String, fp32: Bool, encodeEachRound: Bool) throws {
      let fed = try FederationConfig(path: federation)
      let tokenizer = try Tokenizer(contentsOf: fed.tokenizer)
      let mc = try fed.modelConfig(tokenizer: tokenizer)
      let id = try Identity.load(from: identity)
      let node = try InstantNode(endpoint: fed.endpoint, coordinator: try EnrolmentCard.load(fed.coordinatorCard),
                                 identity: id, federation: fed.id, terms: try fed.terms(tokenizer: tokenizer, model: mc))
      defer { node.shutdown() }
      node.log = { print($0); fflush(stdout) }
      if fed.secureAggregation {
        let layout = ParameterLayout(mc)
        node.secure = try SecureAggregationClient(endpoint: node.endpoint, identity: id, federation: fed, embedding: (layout.wte, mc.vocabSize, mc.channels),
                                                  stop: ManagedAtomicFlag(), log: { print($0); fflush(stdout) })
      }
      node.encodeEachRound = encodeEachRound
      node.moments = fed.momentWeighting > 0
      node.tokens = UInt64(fed.batch * mc.contextLength)
      try node.run(format: fp32 ? .fp32 : .int8)
  }
}
