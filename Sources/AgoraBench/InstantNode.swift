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
  /// Streamed mode: the update is a `SeededPayload` (seeded by the node's fingerprint and the round), made chunk
  /// by chunk as it is sealed, so the node holds no Δ, no feedback and no encoding: a chunk and its seals.
  var streamed = false

  public func run(format: DeltaFormat) throws {
    // JOIN until WELCOME, as a node does (again after 2.5 s, then at doubling intervals up to 20 s): a JOIN or
    // its WELCOME can be lost with a connection that drops while the coordinator is busy.
    let join = Message.join(name: identity.card.name, software: "agora-bench", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: terms)
    endpoint.send(join)
    var joinSent = Date(), joinInterval = 2.5
    let welcomed = ManagedAtomicFlag()
    var chunk = 1 << 20, key: [UInt8] = []
    var payload: [UInt8] = []
    var have: [UInt8] = []
    // The last round answered: a round announced again (the coordinator repeats its announcement to the nodes it
    // waits for, and it may arrive while this node uploads) is not answered twice.
    var answered: UInt64 = 0
    // Heartbeats, so the coordinator does not expire this node while it fetches or seals.
    let stop = ManagedAtomicFlag()
    defer { stop.set() }
    Thread { [endpoint] in
      while !stop.isSet { Thread.sleep(forTimeInterval: 1); if welcomed.isSet { endpoint.send(.heartbeat) } }
    }.start()
    let end = Date(timeIntervalSinceNow: 3600)
    while Date() < end {
      if !welcomed.isSet && Date().timeIntervalSince(joinSent) >= joinInterval {
        endpoint.send(join)
        joinSent = Date(); joinInterval = min(20, joinInterval * 2)
      }
      guard let m = endpoint.receive(timeout: 1), case .success(let msg) = m.message else { continue }
      switch msg {
      case .welcome(_, _, _, let c, _, let k):
        chunk = Int(c); key = k
        welcomed.set()
      case .round where !welcomed.isSet:
        continue  // announced again once this node has joined
      case .round(let r, let base, _, _, _, let deadlineMs, let bytes, let patchFrom, let patchHash, _, _, _):
        guard r > answered else { continue }
        answered = r
        let t0 = Date()
        let deadline = Date(timeIntervalSince1970: Double(deadlineMs) / 1000)
        let secureRound = try secure?.setup(round: r, deadline: deadline)
        let viaPatch = !have.isEmpty && patchFrom == have && patchHash != Message.noHash
        let fetched = try BlobFetcher(endpoint: endpoint).fetch(hash: viaPatch ? patchHash : base) { _ in }
        have = base
        let t1 = Date()
        if streamed {
          let update = SeededPayload(count: Int(bytes) / 4, format: format, seed: fnv1a(identity.card.fingerprint) ^ r)
          let sealer = try EnvelopeSealer(context: .init(federation: federation, round: r, baseHash: base, nodeID: identity.card.nodeID),
                                          payloadLength: UInt64(update.size), chunkSize: chunk, recipient: key, signingSecretKey: identity.signSecret)
          var sender = UploadSender(endpoint: endpoint, transfer: r, round: r)
          sender.deadline = deadline
          sender.maxRetries = 10_000
          _ = try sender.send(sealer: sealer, tokens: tokens, steps: 1, loss: 1) { i in update.octets(at: i * chunk, count: min(chunk, update.size - i * chunk)) }
          log(String(format: "round %llu: fetched %ld B%@ in %.2f s, sent %ld B (streamed) in %.2f s", r, fetched, viaPatch ? " (patch)" : "",
                     t1.timeIntervalSince(t0), update.size, Date().timeIntervalSince(t1)))
          continue
        }
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
        log(String(format: "round %llu: fetched %ld B%@ in %.2f s, sent %ld B in %.2f s", r, fetched, viaPatch ? " (patch)" : "",
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

  /// `agora transport instant-node`: joins the federation of `federation` (a federation.toml) as each identity in
  /// `identities`, one thread per node in this process, and answers every round with a fixed update (fp32,
  /// int8 or int4), without training, until it ends. With `streamed` each node's update is made chunk by chunk
  /// from a seed (`SeededPayload`) instead of held: hundreds of nodes, or a 1B-parameter model's, fit in one process.
  public static func serve(federation: String, identities: [String], format: DeltaFormat, encodeEachRound: Bool, streamed: Bool) throws {
    let fed = try FederationConfig(path: federation)
    let tokenizer = try Tokenizer(contentsOf: fed.tokenizer)
    let mc = try fed.modelConfig(tokenizer: tokenizer)
    let terms = try fed.terms(tokenizer: tokenizer, model: mc)
    let coordinator = try EnrolmentCard.load(fed.coordinatorCard)
    let output = NSLock()
    @Sendable func say(_ s: String) { output.lock(); print(s); fflush(stdout); output.unlock() }
    let failed = ManagedAtomicFlag()
    var threads: [Thread] = []
    let done = DispatchGroup()
    for path in identities {
      let id = try Identity.load(from: path)
      let node = try InstantNode(endpoint: fed.endpoint, coordinator: coordinator, identity: id, federation: fed.id, terms: terms)
      let prefix = identities.count > 1 ? id.card.name + ": " : ""
      node.log = { say(prefix + $0) }
      if fed.secureAggregation {
        guard !streamed else { throw BenchError("streamed updates are plain: not with secure aggregation") }
        let layout = ParameterLayout(mc)
        node.secure = try SecureAggregationClient(endpoint: node.endpoint, identity: id, federation: fed, embedding: (layout.wte, mc.vocabSize, mc.channels),
                                                  stop: ManagedAtomicFlag(), log: { say(prefix + $0) })
      }
      node.encodeEachRound = encodeEachRound
      node.streamed = streamed
      node.moments = fed.momentWeighting > 0
      guard !(streamed && (node.moments || encodeEachRound)) else { throw BenchError("streamed updates carry no moments and are not encoded each round") }
      node.tokens = UInt64(fed.batch * mc.contextLength)
      done.enter()
      let t = Thread {
        defer { node.shutdown(); done.leave() }
        do { try node.run(format: format) } catch { say(prefix + "failed: \(error)"); failed.set() }
      }
      t.stackSize = 1 << 20
      threads.append(t)
    }
    threads.forEach { $0.start() }
    done.wait()
    if failed.isSet { throw BenchError("an instant node failed (see above)") }
  }
}
