import AgoraCrypto
import AgoraData
import AgoraModel
import AgoraTensor
import AgoraTrainer
import AgoraTransport
import AgoraWire
import Foundation

/// One row of the round table.
public struct RoundReport: Sendable {
  public var round: Int
  public var version: Int
  public var hash: String
  public var selected: Int
  public var accepted: Int
  public var rejected: [String]
  public var tokens: UInt64
  public var bytesIn: UInt64
  public var meanLoss: Double
  public var seconds: Double
  public var bitsPerByte: [(String, Double)]
  public var applied: Bool
}

/// The coordinator service: admits enrolled nodes, announces rounds, receives sealed updates one at a time
/// into a scratch buffer, folds accepted ones into a running weighted sum (memory O(model) whatever the
/// number of nodes), applies the outer optimizer and publishes the next version.
public final class CoordinatorService {
  public let config: CoordinatorConfig
  let identity: Identity
  let registry: EnrolmentRegistry
  let zap: ZAPHandler
  public let endpoint: Endpoint
  let sessions: SessionTable
  let blobs: BlobServer
  let receiver: UploadReceiver
  public let modelConfig: GPTConfig
  let params: FloatBuffer
  let sum: FloatBuffer
  let scratch: FloatBuffer
  let outer: OuterOptimizer
  let evaluator: (GPT, Evaluator)?
  public var log: (String) -> Void = { print($0) }
  public var onRound: (RoundReport) -> Void = { _ in }
  public private(set) var version = 0
  public private(set) var versionHash: [UInt8] = []
  let stop = ManagedAtomicFlag()

  public init(config: CoordinatorConfig) throws {
    self.config = config
    let fed = config.federation
    identity = try Identity.load(from: config.identity)
    guard let aggP = identity.card.aggregationPublic, let aggS = identity.aggregationSecret else {
      throw ConfigError(file: config.identity, key: "-", problem: "not a coordinator identity (no aggregation key; use agora keygen --coordinator)")
    }
    registry = try EnrolmentRegistry.load(directory: config.enrolled)
    let tokenizer = try Tokenizer(contentsOf: fed.tokenizer)
    var mc = try GPTConfig.preset(fed.preset)
    mc.vocabSize = tokenizer.vocabSize
    modelConfig = mc
    try mc.validate()
    let layout = ParameterLayout(mc)
    params = FloatBuffer(count: layout.count)
    GPT.initialise(params, layout: layout, seed: fed.seed)
    sum = FloatBuffer(count: params.count)
    scratch = FloatBuffer(count: params.count)
    outer = OuterOptimizer(kind: fed.outerOptimizer, count: params.count, lr: Float(fed.outerLR), momentum: Float(fed.outerMomentum))
    if !fed.evalData.isEmpty {
      let sources = try LanguageSource.discover(fed.evalData)
      let corpus = try TokenizedCorpus(sources: sources, tokenizer: tokenizer, tokenizerPath: fed.tokenizer, cacheDir: config.dataDir + "/eval-cache")
      evaluator = (try GPT(config: mc, batch: 8, sequence: mc.contextLength, seed: 0), Evaluator(corpus: corpus, tokenizer: tokenizer, maxWindows: 4))
    } else {
      evaluator = nil
    }
    zap = ZAPHandler(registry: registry)
    try zap.start()
    endpoint = try Endpoint.server(bind: config.bind, keys: CurveKeys(publicKey: identity.card.curvePublic, secretKey: identity.curveSecret))
    var p = SessionTable.Parameters(federation: fed.id, aggregationKey: aggP)
    p.chunkSize = 1 << 20
    sessions = SessionTable(parameters: p, registry: registry, endpoint: endpoint)
    blobs = BlobServer(chunkSize: Int(p.chunkSize))
    receiver = UploadReceiver(context: .init(federation: fed.id, round: 0, baseHash: [UInt8](repeating: 0, count: 32),
                                             aggregationPublic: aggP, aggregationSecret: aggS, credit: 8), registry: registry)
    try FileManager.default.createDirectory(atPath: config.dataDir + "/blobs", withIntermediateDirectories: true)
  }

  /// Asks `run` to stop at the next message (SIGINT/SIGTERM): the current round is abandoned, never half-applied.
  public func requestStop() { stop.set() }

  /// Writes the current parameters as a content-addressed blob and serves it.
  func publishVersion() throws {
    let bytes = UnsafeRawBufferPointer(start: params.pointer, count: params.count * 4)
    let hash = Sodium.blake2b(bytes)
    let path = config.dataDir + "/blobs/" + hex(hash)
    if !FileManager.default.fileExists(atPath: path) {
      // Written straight from the parameter buffer: no second copy of the model in memory.
      try AtomicFile.write(to: path) { h in
        try h.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: bytes.baseAddress!), count: bytes.count, deallocator: .none))
      }
    }
    try blobs.publish(path: path)
    versionHash = hash
  }

  /// Handles one inbound message of any kind.
  func pump(timeout: Double) {
    guard let m = endpoint.receive(timeout: timeout) else { return }
    switch sessions.handle(m) {
    case .handled: break
    case .dropped(let why): log("  dropped: \(why)")
    case .forward:
      if blobs.handle(m, endpoint: endpoint) { return }
      _ = receiver.handle(m, endpoint: endpoint)
    }
  }

  /// Runs the configured number of rounds; returns their reports.
  @discardableResult
  public func run() throws -> [RoundReport] {
    let fed = config.federation
    try publishVersion()
    log("coordinator of \(fed.id) listening on \(endpoint.boundEndpoint); model \(fed.preset), \(params.count) parameters, version 0 \(hex(versionHash).prefix(12))")
    var reports: [RoundReport] = []
    if let (model, ev) = evaluator { reports.append(evaluate(model, ev, round: 0)) }
    // Wait (bounded) for the nodes that must be there before the first round.
    let joinDeadline = Date(timeIntervalSinceNow: fed.deadlineSeconds)
    while sessions.live.count < fed.minNodes && Date() < joinDeadline && !stop.isSet { pump(timeout: 0.2) }
    for r in 1...fed.rounds where !stop.isSet {
      reports.append(try round(r))
      onRound(reports.last!)
    }
    for s in sessions.live { endpoint.send(.leave(reason: "the federation's rounds are over"), to: s.peer) }
    Thread.sleep(forTimeInterval: 0.3)
    return reports
  }

  func round(_ r: Int) throws -> RoundReport {
    let fed = config.federation
    let started = Date()
    let deadline = Date(timeIntervalSinceNow: fed.deadlineSeconds)
    _ = sessions.expire()
    let selected = sessions.live
    receiver.reset(endpoint: endpoint)
    receiver.context.round = UInt64(r)
    receiver.context.baseHash = versionHash
    sum.zero()
    var weightTotal = 0.0, tokens: UInt64 = 0, bytesIn: UInt64 = 0, losses: [Double] = [], norms: [Float] = []
    var done: Set<String> = [], rejected: [String] = []
    var decoder: DeltaDecoder? = nil
    let baseNorm = l2(params)
    receiver.onStart = { [scratch] _, _ in decoder = DeltaDecoder(into: scratch.pointer, capacity: scratch.count) }
    receiver.onAbort = { _, _ in decoder = nil }
    receiver.onReject = { node, _, _ in rejected.append(node); done.insert(node) }
    receiver.onChunk = { _, _, plain in try decoder!.feed(plain) }
    receiver.onComplete = { [self] c in
      try decoder!.finish()
      decoder = nil
      let norm = l2(scratch)
      // Rejected: anything non-finite, a Δ ten times larger than the model itself, or one ten times the
      // median of the updates already accepted this round.
      let median = norms.sorted().dropFirst(norms.count / 2).first
      if !norm.isFinite || norm > 10 * baseNorm || (median.map { norm > 10 * $0 } ?? false) {
        throw ModelError.nonFinite("update norm \(norm) is far outside the others (median \(median.map { "\($0)" } ?? "none yet"), model norm \(baseNorm))")
      }
      let w = Double(max(c.tokens, 1))
      let wf = Float(w)
      let (s, d) = (sum.pointer, scratch.pointer)
      Parallel.forRange(sum.count, minChunk: 16384) { a, b in for i in a..<b { s[i] += wf * d[i] } }
      weightTotal += w
      tokens += c.tokens
      bytesIn += c.bytes
      losses.append(Double(c.loss))
      norms.append(norm)
      done.insert(c.node)
    }
    receiver.log = { [self] in log("  " + $0) }
    let lrBits = Float(fed.learningRate).bitPattern
    for s in selected {
      endpoint.send(.round(round: UInt64(r), baseHash: versionHash, innerSteps: UInt32(fed.innerSteps), batch: UInt32(fed.batch),
                           learningRateBits: lrBits, deadlineMillis: UInt64(deadline.timeIntervalSince1970 * 1000),
                           modelBytes: UInt64(params.count * 4)), to: s.peer)
    }
    let wanted = Set(selected.map(\.fingerprint))
    while !stop.isSet && Date() < deadline && !wanted.isSubset(of: done) {
      pump(timeout: 0.1)
      // A node that died is not waited for: once it is expired, the round goes on without it.
      for gone in sessions.expire() where wanted.contains(gone.fingerprint) {
        log("  \(gone.name) stopped answering; round \(r) goes on without it")
        done.insert(gone.fingerprint)
      }
      // A selected node that joined again during the round has restarted and lost its work: it takes part
      // from the next round on (fetching the latest version by hash then).
      for fp in wanted.subtracting(done) {
        if let s = sessions.session(fp), s.joined > started {
          log("  \(s.name) restarted; round \(r) goes on without it")
          done.insert(fp)
        }
      }
    }
    let accepted = norms.count
    let needed = max(1, Int((fed.quorum * Double(selected.count)).rounded(.up)))
    var applied = false
    if !stop.isSet && accepted >= needed && weightTotal > 0 {
      let inv = Float(1 / weightTotal)
      let s = sum.pointer
      Parallel.forRange(sum.count, minChunk: 16384) { a, b in for i in a..<b { s[i] *= inv } }
      outer.apply(params: params, meanDelta: sum)
      version += 1
      try publishVersion()
      applied = true
    } else {
      log("  round \(r): \(accepted) of \(selected.count) updates, quorum \(needed) not reached; version \(version) stays")
    }
    var report = RoundReport(round: r, version: version, hash: hex(versionHash), selected: selected.count, accepted: accepted,
                             rejected: rejected, tokens: tokens, bytesIn: bytesIn, meanLoss: losses.isEmpty ? .nan : losses.reduce(0, +) / Double(losses.count),
                             seconds: Date().timeIntervalSince(started), bitsPerByte: [], applied: applied)
    if let (model, ev) = evaluator { report.bitsPerByte = evaluate(model, ev, round: r).bitsPerByte }
    return report
  }

  func evaluate(_ model: GPT, _ ev: Evaluator, round: Int) -> RoundReport {
    model.parameters.copy(from: params)
    let bpb = (try? ev.bitsPerByte(model: model)) ?? []
    return RoundReport(round: round, version: version, hash: hex(versionHash), selected: 0, accepted: 0, rejected: [], tokens: 0, bytesIn: 0,
                       meanLoss: .nan, seconds: 0, bitsPerByte: bpb, applied: true)
  }

  public func shutdown() {
    endpoint.close()
    zap.stop()
  }
}

func l2(_ b: FloatBuffer) -> Float {
  var s = 0.0
  for i in 0..<b.count { s += Double(b[i]) * Double(b[i]) }
  return Float(s.squareRoot())
}

