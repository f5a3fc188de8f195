import AgoraCrypto
import AgoraDashboard
import Hummingbird
import AgoraData
import AgoraModel
import AgoraRegistry
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
  /// Late updates of the previous round folded in with staleness weighting (not counted in `accepted`).
  public var late: Int = 0
  /// Compute donors among the selected nodes.
  public var donors: Int = 0
  /// Why the round made no version ("quorum not reached", "no change"); empty when it made one.
  public var note: String = ""
}

/// Where the coordinator's log lines go; set once the service is made, read from the ZAP handler's thread too.
final class LogSink: @unchecked Sendable {
  private let lock = NSLock()
  private var sink: (String) -> Void = { print($0) }
  func callAsFunction(_ line: String) { lock.lock(); let f = sink; lock.unlock(); f(line) }
  func set(_ f: @escaping (String) -> Void) { lock.lock(); sink = f; lock.unlock() }
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
  /// The plaintext of the update being received: the largest payload a node may send, allocated once and
  /// touched only as far as payloads reach (int8 updates use a quarter of it).
  let staging: UnsafeMutableRawBufferPointer
  /// Bytes of the current upload in `staging`.
  var received = 0
  /// Whether the update being received is staged in θ's memory (fp32 updates, once θ is in its version
  /// blob): θ is then read back from the blob (and checked against `paramsChecksum`) before the next step.
  var stagedInParams = false
  var paramsChecksum: UInt64 = 0
  /// ‖θ‖ of the current version (taken when θ changes, so a round never needs θ's pages).
  var modelNorm: Float = 0
  let outer: OuterOptimizer
  /// The current version's optimizer-state blob (nil: none yet, m = 0). m lives there, not in memory.
  var stateHash: String? = nil
  /// The next version's optimizer state, written by `step` under a temporary name until persisted.
  var pendingState: String? = nil
  let evaluator: (GPT, Evaluator)?
  let logSink = LogSink()
  public var log: (String) -> Void {
    get { { [logSink] in logSink($0) } }
    set { logSink.set(newValue) }
  }
  /// Which updates reach the sum (norm bound from past rounds, claims); resumed from the registry.
  var acceptance: AcceptanceRule
  /// Per round, nodes that told the coordinator they abandon it (ERROR about the round).
  var abandoned: [UInt64: Set<String>] = [:]
  public var onRound: (RoundReport) -> Void = { _ in }
  public private(set) var version = 0
  /// The number of the version the current one was made from.
  var versionParent = 0
  public private(set) var versionHash: [UInt8] = []
  /// The current version's parent hash (zero for version 0) and the coordinator's signature of it.
  var parentHash = zero32
  var versionSignature = [UInt8](repeating: 0, count: 64)
  /// The registry: blobs and metadata of every version, round and contribution.
  public let store: Registry
  /// What the dashboard shows of the round in progress and of connected nodes.
  public let live: LiveState
  /// Prometheus metrics, served by the dashboard at /metrics.
  public let metrics = FederationMetrics()
  var dashboardTask: Task<Void, Never>? = nil
  /// The first round this run will hold (after a restart, the one after the last recorded).
  public private(set) var firstRound = 1
  let tokenizerHash: String
  let configJSON: String
  /// The safetensors header of every version blob of this model (`header ‖ parameters`).
  let weightsHeader: [UInt8]
  /// The public corpus cut into shards for compute donors, and where the rotation over them stands.
  public private(set) var shards: [PublicShard] = []
  var shardCursor = 0
  /// The int8 patch from the previous version to this one (hashes), when the last round made one.
  var patch: (from: [UInt8], hash: [UInt8], path: String)? = nil
  let stop = ManagedAtomicFlag()

  public init(config: CoordinatorConfig) throws {
    self.config = config
    let fed = config.federation
    identity = try Identity.load(from: config.identity)
    guard let aggP = identity.card.aggregationPublic, let aggS = identity.aggregationSecret else {
      throw ConfigError(file: config.identity, key: "-", problem: "not a coordinator identity (no aggregation key; use agora keygen --coordinator)")
    }
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: config.enrolled, isDirectory: &isDir), isDir.boolValue else {
      throw ConfigError(file: config.path, key: "coordinator.enrolled", problem: "\(config.enrolled) is not a directory (of the enrolled nodes' cards)")
    }
    registry = try EnrolmentRegistry.load(directory: config.enrolled)
    let tokenizer = try Tokenizer(contentsOf: fed.tokenizer)
    var mc = try GPTConfig.preset(fed.preset)
    mc.vocabSize = tokenizer.vocabSize
    modelConfig = mc
    try mc.validate()
    let layout = ParameterLayout(mc)
    params = FloatBuffer(count: layout.count, leading: DeltaCodec.headerBytes)
    sum = FloatBuffer(count: params.count)
    // The registry first: a data directory that cannot be used stops the coordinator before it listens.
    try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true)
    let st = try Registry(dataDir: config.dataDir, federation: fed.id, create: true)
    store = st
    live = LiveState(federation: fed.id)
    configJSON = String(decoding: Checkpoint.configJSON(mc, eot: Int(tokenizer.eotID)), as: UTF8.self)
    weightsHeader = Checkpoint.weightsHeader(mc)
    tokenizerHash = hex(try tokenizer.jsonData().withUnsafeBytes { try st.writeBlob($0) })
    staging = .allocate(byteCount: DeltaCodec.encodedSize(count: layout.count, format: .fp32), alignment: 64)
    outer = OuterOptimizer(kind: fed.outerOptimizer, count: params.count, lr: Float(fed.outerLR), momentum: Float(fed.outerMomentum),
                           momentumInMemory: false)
    if !fed.evalData.isEmpty {
      let sources = try LanguageSource.discover(fed.evalData)
      let corpus = try TokenizedCorpus(sources: sources, tokenizer: tokenizer, tokenizerPath: fed.tokenizer, cacheDir: config.dataDir + "/eval-cache")
      evaluator = (try GPT(config: mc, batch: 8, sequence: mc.contextLength, seed: 0), Evaluator(corpus: corpus, tokenizer: tokenizer, maxWindows: fed.evalWindows))
    } else {
      evaluator = nil
    }
    acceptance = AcceptanceRule(factor: Float(fed.normBoundFactor), cosineFactor: Float(fed.cosineBoundFactor))
    let sink = logSink
    zap = ZAPHandler(registry: registry, log: { line in sink("  " + line) })
    try zap.start()
    endpoint = try Endpoint.server(bind: config.bind, keys: CurveKeys(publicKey: identity.card.curvePublic, secretKey: identity.curveSecret))
    var p = SessionTable.Parameters(federation: fed.id, aggregationKey: aggP)
    p.chunkSize = 1 << 20
    p.terms = try fed.terms(tokenizer: tokenizer, model: mc)
    sessions = SessionTable(parameters: p, registry: registry, endpoint: endpoint)
    blobs = BlobServer(chunkSize: Int(p.chunkSize))
    receiver = UploadReceiver(context: .init(federation: fed.id, round: 0, baseHash: [UInt8](repeating: 0, count: 32),
                                             aggregationPublic: aggP, aggregationSecret: aggS, credit: 8), registry: registry)
    try openStore(layout: layout)
    let recent = try store.recentNorms(rounds: acceptance.window)
    acceptance = AcceptanceRule(factor: Float(fed.normBoundFactor), cosineFactor: Float(fed.cosineBoundFactor), history: recent.norms, cosines: recent.cosines)
    modelNorm = l2(params)
    if !fed.publicData.isEmpty {
      shards = try PublicShards.build(sources: try LanguageSource.discover(fed.publicData), bytes: fed.shardBytes, dir: config.dataDir + "/shards")
      for s in shards { try blobs.publish(path: s.path) }
    }
  }

  /// Asks `run` to stop at the next message (SIGINT/SIGTERM): the current round is abandoned, never half-applied.
  public func requestStop() { stop.set() }

  /// Resumes from the registry's latest version (weights and optimizer state, hash-checked), or makes
  /// version 0 from the seed and records it. Temporary files a crash left behind are removed first; nothing
  /// the registry names is ever deleted here.
  func openStore(layout: ParameterLayout) throws {
    let fed = config.federation
    for t in store.removeTemporaryFiles() { log("  removed \(t), left by an interrupted write") }
    for card in registry.cards {
      let known = try store.nodes().first { $0.fingerprint == card.fingerprint }
      try store.upsert(node: NodeRecord(fingerprint: card.fingerprint, name: card.name, institution: card.institution, contact: card.contact,
                                        role: known?.role ?? "institution", languages: [], status: known?.status ?? "enrolled",
                                        enrolledAt: known?.enrolledAt ?? Date().timeIntervalSince1970, revokedAt: known?.revokedAt,
                                        signKey: hex(card.signPublic), curveKey: hex(card.curvePublic)).keepingLanguages(of: known))
      if known?.status == "revoked" { registry.revoke(fingerprint: card.fingerprint) }
    }
    // A revocation (refused at once by the ZAP handler) is recorded with the node and in the event log.
    registry.onRevoke { [store] card in
      guard var n = try? store.nodes().first(where: { $0.fingerprint == card.fingerprint }) else { return }
      n.status = "revoked"
      n.revokedAt = Date().timeIntervalSince1970
      try? store.upsert(node: n)
    }
    if let latest = try store.latestVersion() {
      guard latest.config == configJSON else {
        throw ConfigError(file: fed.path, key: "model.preset", problem: "the registry in \(config.dataDir) holds versions of another model shape (\(latest.preset)); use its configuration or another data directory")
      }
      guard latest.optimizerKind == outer.kind.rawValue || latest.optimizer == nil else {
        throw ConfigError(file: fed.path, key: "rounds.outer_optimizer", problem: "the registry's versions were made with \(latest.optimizerKind)")
      }
      nextNumber = latest.number + 1
      let resumed = try loadNewestIntact(latest)
      version = resumed.number
      versionHash = unhex(resumed.hash) ?? []
      parentHash = try resumed.parent.map { unhex(try store.version($0).hash) ?? zero32 } ?? zero32
      versionSignature = unhex(resumed.signature) ?? versionSignature
      firstRound = try store.lastRound() + 1
      log("  resuming \(fed.id) from version \(version) (\(resumed.hash.prefix(12))), round \(firstRound)")
    } else {
      GPT.initialise(params, layout: layout, seed: fed.seed)
      let bytes = UnsafeRawBufferPointer(start: params.pointer, count: params.count * 4)
      versionHash = try weightsHeader.withUnsafeBytes { try store.writeBlob(parts: [$0, bytes]) }
      parentHash = zero32
      versionSignature = try sign(number: 0)
      try store.commitGenesis(VersionRecord(number: 0, parent: nil, hash: hex(versionHash), optimizer: nil, optimizerKind: outer.kind.rawValue, round: 0,
                                            createdAt: Date().timeIntervalSince1970, signature: hex(versionSignature), bitsPerByte: [],
                                            tokens: 0, contributors: 0, preset: fed.preset, config: configJSON, tokenizer: tokenizerHash))
    }
    try blobs.publish(path: store.blobPath(versionHash), hash: versionHash, size: weightsHeader.count + params.count * 4)
    blobs.onCorrupt = { [logSink] hash, path in logSink("  blob \(hex(hash).prefix(16))… (\(path)) no longer hashes to its name: it is no longer served") }
  }

  /// The number the next version takes: one past the highest the registry has recorded.
  var nextNumber = 1

  func sign(number: Int) throws -> [UInt8] {
    try Sodium.sign(VersionStatement.bytes(federation: config.federation.id, number: UInt64(number), hash: versionHash, parent: parentHash),
                    secretKey: identity.signSecret)
  }

  /// Writes the version's weights and optimizer state as blobs (each fsynced and renamed), then commits the
  /// version with its round and contributions in one transaction, then serves the weights. This runs on a
  /// background thread while the next round goes on (nodes holding the parent need only the patch; FETCHes
  /// of the whole version wait in the blob server's queue until it is written); `finishWrite` joins it and runs
  /// before the parameters or the optimizer state change again. If the coordinator dies before the commit,
  /// it restarts from the previous version: the one announced was never recorded.
  func persist(version record: VersionRecord, round: RoundRecord, contributions: [ContributionRecord]) {
    let (store, blobs, hash, header) = (self.store, self.blobs, versionHash, weightsHeader)
    let weights = UnsafeRawBufferPointer(start: params.pointer, count: params.count * 4)
    let state = pendingState
    pendingState = nil
    blobs.expect(hash: hash)
    let job = BackgroundWrite()
    pendingWrite = job
    Thread {
      do {
        try header.withUnsafeBytes { try store.writeBlob(parts: [$0, weights], hash: hash) }
        fault("mid-write", round: round.number)
        var r = record
        if let state {
          r.optimizer = hex(try store.adoptBlob(state))
          job.stateHash = r.optimizer
        }
        try store.commit(version: r, round: round, contributions: contributions)
        fault("after-commit", round: round.number)
        try blobs.publish(path: store.blobPath(hash), hash: hash, size: header.count + weights.count)
      } catch {
        job.error = error
        blobs.cancel(hash: hash)
      }
      job.finished.set()
      job.done.signal()
    }.start()
  }

  var pendingWrite: BackgroundWrite? = nil

  /// Waits for the version file being written (if any); rethrows its failure.
  func finishWrite() throws {
    guard let job = pendingWrite else { return }
    job.done.wait()
    pendingWrite = nil
    if let e = job.error { throw e }
    if let h = job.stateHash { stateHash = h }
  }

  /// Handles one inbound message of any kind.
  @discardableResult
  func pump(timeout: Double) -> Bool {
    defer {
      blobs.serve(endpoint: endpoint)
      if Date().timeIntervalSince(liveNodesAt) > 1 { updateLiveNodes() }
    }
    guard let m = endpoint.receive(timeout: timeout) else { return false }
    switch sessions.handle(m) {
    case .handled: break
    case .dropped(let why): log("  dropped: \(why)")
    case .forward:
      if case .success(.error(_, let text, .round(let r))) = m.message {
        // A node says it will send nothing for round r (a bad version, other settings, a failure): not waited for.
        abandoned[r, default: []].insert(m.userID)
        log("  \(sessions.session(m.userID)?.name ?? String(m.userID.prefix(12))) abandons round \(r): \(Printable.line(text))")
      } else if !blobs.handle(m, endpoint: endpoint) {
        _ = receiver.handle(m, endpoint: endpoint)
      }
    }
    return true
  }

  var liveNodesAt = Date.distantPast
  func updateLiveNodes() {
    liveNodesAt = Date()
    let nodes = sessions.live.map { LiveStatus.Node(fingerprint: $0.fingerprint, name: $0.name, donor: $0.donor, lastSeen: $0.lastSeen.timeIntervalSince1970) }
    let v = version
    live.update { $0.nodes = nodes; $0.version = v }
    metrics.nodesConnected.set(Double(nodes.count))
    metrics.latestVersion.set(Double(v))
  }

  /// Starts the dashboard (Hummingbird) if the configuration names an address; returns its URL.
  @discardableResult
  public func startDashboard() -> String? {
    guard let (host, port) = config.dashboard, dashboardTask == nil else { return nil }
    let app = Application(router: Dashboard.router(store: store, live: live, token: config.dashboardToken, metrics: metrics,
                                                   signKey: identity.card.signPublic,
                                                   modelCard: { [store, key = identity.card.signPublic] n in try VersionExport.modelCard(n, from: store, signKey: key) }),
                          configuration: .init(address: .hostname(host, port: port), serverName: "agora"))
    let log = self.log
    nonisolated(unsafe) let logger = log
    dashboardTask = Task.detached {
      do { try await app.runService(gracefulShutdownSignals: []) } catch { logger("  dashboard stopped: \(error)") }
    }
    return "http://\(host.contains(":") ? "[\(host)]" : host):\(port)/"
  }

  /// Runs the configured number of rounds; returns their reports.
  @discardableResult
  public func run() throws -> [RoundReport] {
    let fed = config.federation
    nonisolated(unsafe) let logger = log
    sessions.log = { logger("  " + $0) }
    log("coordinator of \(fed.id) listening on \(endpoint.boundEndpoint); model \(fed.preset), \(params.count) parameters, version \(version) \(hex(versionHash).prefix(12))")
    var reports: [RoundReport] = []
    if let (model, ev) = evaluator { reports.append(evaluate(model, ev, round: 0)) }
    // Wait (bounded) for the nodes that must be there before the first round.
    let joinDeadline = Date(timeIntervalSinceNow: fed.deadlineSeconds)
    if sessions.live.count < fed.minNodes {
      log("  waiting for \(fed.minNodes) node\(fed.minNodes == 1 ? "" : "s") to join (at most \(Int(fed.deadlineSeconds)) s)")
    }
    while sessions.live.count < fed.minNodes && Date() < joinDeadline && !stop.isSet { pump(timeout: 0.2) }
    var r = firstRound
    var waitingSaid = false
    while r <= fed.rounds && !stop.isSet {
      // A round needs a node: with none connected the coordinator waits (a round without nodes is not held).
      for _ in 0..<100_000 { guard pump(timeout: 0) else { break } }
      _ = sessions.expire()
      if sessions.live.isEmpty {
        if !waitingSaid { log("  no node is connected; round \(r) waits for one"); waitingSaid = true }
        pump(timeout: 0.2)
        continue
      }
      waitingSaid = false
      guard let report = try round(r) else { break }  // stopped: the round is abandoned, not recorded
      reports.append(report)
      onRound(report)
      r += 1
    }
    try finishWrite()
    // Stopped (SIGINT/SIGTERM): the session ends, the federation does not; nodes wait for the coordinator to return.
    let leave: Message = r > fed.rounds ? .leave(kind: .finished, reason: "the federation's rounds are over")
                                        : .leave(kind: .session, reason: "the coordinator is stopping; join again when it is back")
    for s in sessions.live { endpoint.send(leave, to: s.peer) }
    Thread.sleep(forTimeInterval: 0.3)
    return reports
  }

  /// Holds round `r`; nil when a stop request abandoned it (nothing of it is recorded).
  func round(_ r: Int) throws -> RoundReport? {
    let fed = config.federation
    // Only a committed version is announced: the previous round's version is in the registry before any node
    // trains on it (a crash in the write then never leaves nodes holding a number the registry gives to another).
    try finishWrite()
    let started = Date()
    let deadline = Date(timeIntervalSinceNow: fed.deadlineSeconds)
    // Take what arrived while the last round was being applied and scored (heartbeats above all) before
    // deciding who is gone.
    for _ in 0..<100_000 { guard pump(timeout: 0) else { break } }
    _ = sessions.expire()
    let selected = sessions.live
    // With late updates taken, the previous round's uploads go on (an active one keeps streaming into the
    // staging buffer) and are folded into this round with staleness weighting.
    let stale = fed.lateUpdates == .stale && r > 1
    receiver.context.previous = stale ? (receiver.context.round, receiver.context.baseHash) : nil
    receiver.reset(endpoint: endpoint, keepRound: stale ? receiver.context.round : nil)
    receiver.context.round = UInt64(r)
    receiver.context.baseHash = versionHash
    var weightTotal = 0.0, tokens: UInt64 = 0, bytesIn: UInt64 = 0, losses: [Double] = [], norms: [Float] = []
    var done: Set<String> = [], rejected: [String] = [], late = 0
    var contributions: [ContributionRecord] = []
    let names = Dictionary(selected.map { ($0.fingerprint, ($0.name, $0.donor)) }, uniquingKeysWith: { a, _ in a })
    receiver.onStart = { [self] _, _ in received = 0 }
    receiver.onAbort = { [self] _, _ in received = 0 }
    receiver.onReject = { [metrics] node, forRound, _ in
      rejected.append(node)
      metrics.updatesRejected.increment()
      if forRound == UInt64(r) { done.insert(node) }
    }
    // Chunks are decrypted straight into the staging area, in order (one upload streams at a time).
    receiver.destination = { [self] _, _, n in
      if received + n > int8Bytes { stageInParams() }
      let area = stagingArea
      return received + n <= area.count ? UnsafeMutableRawBufferPointer(rebasing: area[received..<(received + n)]) : nil
    }
    receiver.onChunk = { [self] _, _, plain in
      // `destination` placed every chunk that fits; one that does not landed in the receiver's scratch.
      guard plain.baseAddress == UnsafeRawPointer(stagingArea.baseAddress! + received) else {
        throw DeltaError.length(got: received + plain.count, expected: stagingArea.count)
      }
      received += plain.count
    }
    var onTime: [Float] = [], onTimeCosines: [Float] = []
    baseScores = [:]
    abandoned = abandoned.filter { $0.key >= UInt64(r) }
    let expectedFormat: DeltaFormat = fed.compression == .int8 ? .int8 : .fp32
    receiver.onComplete = { [self] c in
      defer { received = 0 }  // nothing is staged any more
      let payload = UnsafeRawBufferPointer(start: stagingArea.baseAddress, count: received)
      let (format, squared) = try DeltaCodec.validate(payload, count: sum.count)
      let norm = Float(squared.squareRoot())
      guard norm.isFinite else { throw UpdateRefusal.norm(norm, bound: .infinity, basis: "not finite") }
      try acceptance.check(format: format, expected: expectedFormat, norm: norm, steps: Int(c.steps), tokens: c.tokens, innerSteps: fed.innerSteps,
                           batch: fed.batch, context: modelConfig.contextLength, learningRate: fed.learningRate, parameters: sum.count)
      // The update's direction against the last outer step (the kept patch), when that check is on (it reads the
      // patch and both vectors once more: about 20 ms per bench-14m update).
      var cosine: Float? = nil
      if acceptance.cosineFactor > 0, let p = patch, c.round == UInt64(r) {
        let (dot, a2, b2) = try DeltaCodec.similarity(payload, format: format, int8File: p.path, count: sum.count)
        if a2 > 0 && b2 > 0 { cosine = Float(dot / (a2.squareRoot() * b2.squareRoot())) }
      }
      log(String(format: "  update of %@ for round %llu: norm %.6g%@, %llu tokens", names[c.node]?.0 ?? String(c.node.prefix(12)), c.round, norm,
                 cosine.map { String(format: ", cosine with the last step %+.4f", $0) } ?? "", c.tokens))
      try acceptance.checkDirection(cosine)
      if fed.scoreUpdates, c.round == UInt64(r) { try score(payload, languages: c.languages.map(\.language), node: names[c.node]?.0 ?? String(c.node.prefix(12))) }
      var w = Double(max(c.tokens, 1))
      if c.round < UInt64(r) {
        // A late update, made on an older version: weighted down by (1 + staleness)^−a.
        let staleness = Double(UInt64(r) - c.round)
        w *= pow(1 + staleness, -fed.stalenessExponent)
        late += 1
        log(String(format: "  late update of round %llu from %@ applied with staleness %.0f (weight ×%.3f, norm %.6g)", c.round, String(c.node.prefix(12)),
                   staleness, pow(1 + staleness, -fed.stalenessExponent), norm))
      }
      try DeltaCodec.decode(payload, into: sum.pointer, count: sum.count, mode: .add(Float(w)))
      weightTotal += w
      tokens += c.tokens
      bytesIn += c.bytes
      losses.append(Double(c.loss))
      norms.append(norm)
      if c.round == UInt64(r) { onTime.append(norm); if let cs = cosine { onTimeCosines.append(cs) } }
      if c.round == UInt64(r) { done.insert(c.node); live.update { $0.received += 1 } }
      metrics.updatesReceived.increment()
      metrics.bytesIn.increment(by: Int64(c.bytes))
      let who = names[c.node] ?? sessions.session(c.node).map { ($0.name, $0.donor) } ?? (String(c.node.prefix(12)), false)
      var perLanguage = Dictionary(c.languages.map { ($0.language, Int($0.tokens)) }, uniquingKeysWith: +)
      if perLanguage.isEmpty { perLanguage["unknown"] = Int(c.tokens) }
      contributions.append(ContributionRecord(round: r, node: c.node, name: who.0, role: who.1 ? "donor" : "institution", tokens: Int(c.tokens),
                                              languages: perLanguage, steps: Int(c.steps), seconds: c.cpuSeconds,
                                              bytes: Int(c.bytes), loss: Double(c.loss), weight: w, late: c.round < UInt64(r), norm: Double(norm),
                                              cosine: cosine.map(Double.init)))
    }
    receiver.log = { [self] in log("  " + $0) }
    let lrBits = Float(fed.learningRate).bitPattern
    for s in selected {
      var shard = zero32
      if s.donor, !shards.isEmpty {
        let p = shards[shardCursor % shards.count]
        shardCursor += 1
        shard = p.hash
        log("  \(s.name) (donor) trains on public shard \(p.language) #\(p.index)")
      }
      endpoint.send(.round(round: UInt64(r), baseHash: versionHash, innerSteps: UInt32(fed.innerSteps), batch: UInt32(fed.batch),
                           learningRateBits: lrBits, deadlineMillis: UInt64(deadline.timeIntervalSince1970 * 1000),
                           modelBytes: UInt64(params.count * 4), patchFrom: parentHash, patchHash: patch?.hash ?? zero32, shardHash: shard,
                           version: UInt64(version), signature: versionSignature), to: s.peer)
    }
    sum.zero()
    let wanted = Set(selected.map(\.fingerprint))
    live.update { $0.round = r; $0.expected = selected.count; $0.received = 0; $0.deadline = deadline.timeIntervalSince1970 }
    defer {
      let v = version
      live.update { $0.round = nil; $0.deadline = nil; $0.version = v }
      metrics.rounds.increment()
      metrics.latestVersion.set(Double(v))
      metrics.roundDuration.record(.milliseconds(Int64(Date().timeIntervalSince(started) * 1000)))
    }
    while !stop.isSet && Date() < deadline && !wanted.isSubset(of: done) {
      pump(timeout: 0.1)
      // A node that died is not waited for: once it is expired, the round goes on without it.
      // Its transfers are abandoned too: a stalled upload frees the slot of those waiting behind it.
      for gone in sessions.expire() {
        receiver.forget(node: gone.fingerprint, endpoint: endpoint)
        if wanted.contains(gone.fingerprint) && done.insert(gone.fingerprint).inserted {
          log("  \(gone.name) stopped answering; round \(r) goes on without it")
        }
      }
      // A node that left (LEAVE) or said it abandons the round is not waited for either.
      for fp in sessions.takeLeft() {
        receiver.forget(node: fp, endpoint: endpoint)
        if wanted.contains(fp) && done.insert(fp).inserted { log("  \(names[fp]?.0 ?? String(fp.prefix(12))) left; round \(r) goes on without it") }
      }
      for fp in abandoned[UInt64(r)] ?? [] where wanted.contains(fp) { done.insert(fp) }
      receiver.refuseStalled(after: fed.uploadStallSeconds, endpoint: endpoint)
      // A selected node that joined again during the round has restarted and lost its work: it takes part
      // from the next round on (fetching the latest version by hash then).
      for fp in wanted.subtracting(done) {
        if let s = sessions.session(fp), s.joined > started {
          log("  \(s.name) restarted; round \(r) goes on without it")
          done.insert(fp)
        }
      }
    }
    let accepted = norms.count - late  // on time: these make the quorum
    let needed = max(1, Int((fed.quorum * Double(selected.count)).rounded(.up)))
    var applied = false
    var outcome = ""
    if !stop.isSet && accepted >= needed && weightTotal > 0 {
      let inv = Float(1 / weightTotal)
      let s = sum.pointer
      Parallel.forRange(sum.count, minChunk: 16384) { a, b in for i in a..<b { s[i] *= inv } }
      fault("before-step", round: r)
      applied = try step(round: r)
      fault("after-step", round: r)
      if applied {
        outcome = "version \(version)"
      } else {
        outcome = "no change"
        log("  round \(r): the step leaves every parameter as it was; no new version (version \(version) stays)")
      }
    } else {
      outcome = "quorum not reached (\(accepted) of \(needed))"
      log("  round \(r): \(accepted) of \(selected.count) updates, quorum \(needed) not reached; version \(version) stays")
    }
    if !stop.isSet { acceptance.endRound(accepted: onTime, cosines: onTimeCosines) }
    // A round stopped by SIGINT/SIGTERM is abandoned whole: nothing of it is recorded.
    guard !stop.isSet || applied else { return nil }
    var report = RoundReport(round: r, version: version, hash: hex(versionHash), selected: selected.count, accepted: accepted,
                             rejected: rejected, tokens: tokens, bytesIn: bytesIn, meanLoss: losses.isEmpty ? .nan : losses.reduce(0, +) / Double(losses.count),
                             seconds: Date().timeIntervalSince(started), bitsPerByte: [], applied: applied)
    report.late = late
    report.donors = selected.filter(\.donor).count
    report.note = applied ? "" : outcome
    if let (model, ev) = evaluator { report.bitsPerByte = evaluate(model, ev, round: r).bitsPerByte }
    let roundRecord = RoundRecord(number: r, startedAt: started.timeIntervalSince1970, endedAt: Date().timeIntervalSince1970, selected: selected.count,
                                  accepted: accepted, rejected: rejected.count, late: late,
                                  outcome: outcome, version: applied ? version : nil)
    if applied {
      persist(version: VersionRecord(number: version, parent: versionParent, hash: hex(versionHash), optimizer: nil, optimizerKind: outer.kind.rawValue,
                                     round: r, createdAt: Date().timeIntervalSince1970, signature: hex(versionSignature), bitsPerByte: report.bitsPerByte,
                                     tokens: Int(tokens), contributors: Set(contributions.map(\.node)).count, preset: fed.preset, config: configJSON,
                                     tokenizer: tokenizerHash),
              round: roundRecord, contributions: contributions)
    } else {
      try store.commit(round: roundRecord, contributions: contributions)
    }
    return report
  }

  /// Makes the next version from the mean Δ in `sum`: the outer optimizer turns it into the step u, and the
  /// version is θ − u. With `broadcast = "int8"` u is quantised (stochastic rounding, seeded by the round)
  /// and the coordinator applies exactly the bytes it publishes as the patch, so a node holding the parent
  /// reaches the same bits, and checks them against the version hash.
  ///
  /// The work runs in slices of `MomentumStream.sliceFloats` values on this thread: each slice's u is
  /// computed (momentum read from and written to disk), encoded into the patch (which is hashed and handed to
  /// its file's writer thread) and applied, while a second thread hashes the slices of θ already finished,
  /// so the version hash (the step's longest serial part) runs beside the rest instead of after it. A failure
  /// part-way leaves θ partly stepped and ends the coordinator, which restarts from the last committed version.
  /// Returns false when the step leaves θ bit-identical (e.g. every step value rounds to zero): then no version is
  /// made (a version number always names new content, SPEC §5.2), the optimizer state stays the parent's and the
  /// previous patch stays published.
  @discardableResult
  func step(round r: Int) throws -> Bool {
    let fed = config.federation
    try finishWrite()  // the parameters are about to change
    var marks: [(String, Date)] = [("start", Date())]
    if stagedInParams {
      try restoreParams()
      marks.append(("θ read back", Date()))
    }
    let parent = versionHash
    defer { if ProcessInfo.processInfo.environment["AGORA_TRACE"] != nil { log("  step: " + zip(marks.dropFirst(), marks).map { String(format: "%@ %.0f ms", $0.0.0, $0.0.1.timeIntervalSince($0.1.1) * 1000) }.joined(separator: ", ")) } }
    let trailing = VersionCopy.Trailing(header: weightsHeader, parameters: params)
    var hashed: [UInt8]? = nil
    defer { if hashed == nil { _ = trailing.finish() } }
    let int8 = fed.broadcast == .int8
    let rounding = DeltaCodec.Rounding.stochastic(seed: fed.seed &* 0x100_0000_01B3 ^ UInt64(r))
    // Patches live beside the registry's blobs, not among them: only the latest is kept.
    let patchDir = config.dataDir + "/patches"
    var patchFile: DurableFile.AddressedWriter? = nil
    if int8 {
      try FileManager.default.createDirectory(atPath: patchDir, withIntermediateDirectories: true)
      patchFile = try DurableFile.AddressedWriter(in: patchDir)
    }
    defer { if let f = patchFile { f.abandon() } }
    // The patch is produced slice by slice into a buffer of one slice's blocks, appended to its file and
    // applied to θ: the staging buffer stays untouched (an update streaming across the step keeps its bytes).
    let patchSize = DeltaCodec.encodedSize(count: params.count, format: .int8)
    let sliceBytes = DeltaCodec.int8Bytes(values: 0..<min(params.count, MomentumStream.sliceFloats), count: params.count)
    let sliceBuffer = UnsafeMutableRawPointer.allocate(byteCount: max(sliceBytes, 1), alignment: 64)
    defer { sliceBuffer.deallocate() }
    if let file = patchFile { try DeltaCodec.header(count: params.count, format: .int8).withUnsafeBytes { try file.append($0) } }
    let (p, u) = (params.pointer, sum.pointer)
    let apply: (Range<Int>) throws -> Void = { [sum, params] range in
      if let file = patchFile {
        // One thread: the other core hashes the version meanwhile.
        let n = DeltaCodec.encodeInt8(UnsafeBufferPointer(sum.buffer), values: range, into: sliceBuffer, rounding: rounding)
        try DeltaCodec.applyInt8(sliceBuffer, values: range, count: params.count, into: p, mode: .subtract)
        try file.append(UnsafeRawBufferPointer(start: sliceBuffer, count: n))
      } else {
        for i in range { p[i] -= u[i] }
      }
      trailing.advance(to: range.upperBound)
    }
    if outer.hasMomentum {
      let out = store.temporaryBlobPath("optimizer")
      do {
        try MomentumStream.step(outer: outer, delta: sum, previous: stateHash.map { store.blobPath($0) }, out: out, threads: 1, onSlice: apply)
      } catch {
        unlink(out)
        throw error
      }
      pendingState = out
    } else {
      outer.step(sum)
      for start in stride(from: 0, to: sum.count, by: MomentumStream.sliceFloats) {
        try apply(start..<min(sum.count, start + MomentumStream.sliceFloats))
      }
    }
    marks.append(("outer and patch", Date()))
    var newPatch: (hash: [UInt8], path: String, size: Int)? = nil
    if let file = patchFile {
      let hash = try file.finish()
      patchFile = nil
      newPatch = (hash, patchDir + "/" + hex(hash), patchSize)
      marks.append(("patch file", Date()))
    }
    modelNorm = l2(params)
    hashed = trailing.finish()
    guard let h = hashed else { throw ModelError.mismatch("internal: the step ended before the last parameter was hashed") }
    if h == parent {
      if let n = newPatch, n.path != patch?.path { try? FileManager.default.removeItem(atPath: n.path) }
      if let st = pendingState { unlink(st); pendingState = nil }
      return false
    }
    versionParent = version
    version = nextNumber
    nextNumber += 1
    versionHash = h
    parentHash = parent
    versionSignature = try sign(number: version)
    marks.append(("hash and signature", Date()))
    if let old = patch {
      blobs.unpublish(hash: old.hash)
      if old.path != newPatch?.path { try? FileManager.default.removeItem(atPath: old.path) }
      patch = nil
    }
    if let n = newPatch {
      try blobs.publish(path: n.path, hash: n.hash, size: n.size)
      patch = (parent, n.hash, n.path)
    }
    return true
  }

  /// Where the update being received is staged: the staging buffer, or θ's memory (with the octets before
  /// it for the payload header) after `stageInParams`.
  var stagingArea: UnsafeMutableRawBufferPointer {
    stagedInParams
      ? UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(params.pointer) - DeltaCodec.headerBytes,
                                      count: DeltaCodec.encodedSize(count: params.count, format: .fp32))
      : staging
  }

  /// An fp32 update (56 MB for 14M parameters) is staged in θ's memory instead of a buffer of its own, so the
  /// coordinator holds θ-or-the-update and the running sum, not all three: θ is in its version blob by then
  /// (written by the background persist, which this waits for and which must have succeeded; a thread reads it once
  /// meanwhile, into the page cache), and its checksum is kept to check the copy read back before the step.
  /// What the update has staged so far moves along.
  func stageInParams() {
    guard !stagedInParams else { return }
    if let job = pendingWrite {
      // θ must be in its blob first: wait for the background persist (usually long done; at most its ≈0.1 s).
      if !job.finished.isSet {
        job.done.wait()
        job.done.signal()  // `finishWrite` waits on it too
      }
      guard job.error == nil else { return }
    }
    let path = store.blobPath(hex(versionHash))
    guard FileManager.default.isReadableFile(atPath: path) else { return }
    DurableFile.warm(path, offset: weightsHeader.count, count: params.count * 4)
    paramsChecksum = params.checksum()
    let from = staging.baseAddress!
    stagedInParams = true
    if received > 0 { stagingArea.baseAddress!.copyMemory(from: from, byteCount: received) }
    if !stagedOnce {
      stagedOnce = true
      log("  fp32 updates are staged in θ's memory; θ is read back from version \(version)'s blob before the step")
    }
  }
  var stagedOnce = false

  /// Reads θ back from its version blob after `stageInParams`; an update streaming across the step first moves
  /// what it has staged back to the staging buffer. The staging buffer's pages beyond an int8 update (or the
  /// update still streaming) go back to the kernel: the step needs none of them. A blob that no longer holds
  /// the same θ is an error.
  func restoreParams() throws {
    guard stagedInParams else { return }
    if received > 0 { staging.baseAddress!.copyMemory(from: stagingArea.baseAddress!, byteCount: received) }
    stagedInParams = false
    let keep = max(received, int8Bytes)
    Pages.release(staging.baseAddress! + keep, bytes: staging.count - keep)
    let path = store.blobPath(hex(versionHash))
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw RegistryError.io(path: path, problem: "the current version's weights cannot be read back: \(String(cString: strerror(errno)))") }
    defer {
      _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
      close(fd)
    }
    // In two halves at once (the copy from the page cache, or the disk, is most of it).
    let (base, bytes, header) = (UnsafeMutableRawPointer(params.pointer), params.count * 4, weightsHeader.count)
    let failures = UnsafeMutableBufferPointer<Error?>.allocate(capacity: Parallel.threads)
    failures.initialize(repeating: nil)
    defer { failures.deinitialize(); failures.deallocate() }
    Parallel.forChunks(bytes / 4096 + 1) { c, s, e in
      let lo = s * 4096, hi = min(bytes, e * 4096)
      guard hi > lo else { return }
      do { try DurableFile.read(fd, path: path, at: header + lo, into: UnsafeMutableRawBufferPointer(start: base + lo, count: hi - lo)) } catch {
        failures[c] = error
      }
    }
    if let e = failures.compactMap({ $0 }).first { throw e }
    guard params.checksum() == paramsChecksum else {
      throw RegistryError.io(path: path, problem: "the current version's weights read back differ from those written (checksum)")
    }
  }

  /// Bits per byte of the current version per language on the scoring windows (taken once per round, as needed).
  var baseScores: [String: Double] = [:]

  /// Bytes of an int8 update: staging beyond this holds an fp32 update.
  var int8Bytes: Int { DeltaCodec.encodedSize(count: params.count, format: .int8) }

  func evaluate(_ model: GPT, _ ev: Evaluator, round: Int) -> RoundReport {
    // A round without a step (no quorum) can end with an fp32 update staged where θ is: θ comes back first.
    var bpb: [(String, Double)] = []
    do {
      try restoreParams()
      model.parameters.copy(from: params)
      bpb = (try? ev.bitsPerByte(model: model)) ?? []
    } catch {
      log("  version \(version) is not scored: \(error)")
    }
    return RoundReport(round: round, version: version, hash: hex(versionHash), selected: 0, accepted: 0, rejected: [], tokens: 0, bytesIn: 0,
                       meanLoss: .nan, seconds: 0, bitsPerByte: bpb, applied: true)
  }

  public func shutdown() {
    try? finishWrite()
    staging.deallocate()
    endpoint.close()
    zap.stop()
  }
}

let zero32 = [UInt8](repeating: 0, count: 32)

/// Fault injection for the crash-safety tests: `AGORA_FAULT=<point>@<round>` makes the coordinator kill itself
/// with SIGKILL at that point of that round (before-step, after-step, mid-write, after-commit). Unset in
/// normal use; it changes nothing else.
let faultPoint: (point: String, round: Int)? = {
  guard let s = ProcessInfo.processInfo.environment["AGORA_FAULT"], let at = s.firstIndex(of: "@"), let r = Int(s[s.index(after: at)...]) else { return nil }
  return (String(s[..<at]), r)
}()

func fault(_ point: String, round: Int) {
  if let f = faultPoint, f.point == point, f.round == round {
    FileHandle.standardError.write(Data("  fault injection: SIGKILL at \(point) of round \(round)\n".utf8))
    kill(getpid(), SIGKILL)
  }
}

final class BackgroundWrite: @unchecked Sendable {
  let done = DispatchSemaphore(value: 0)
  /// Set (after `error`) when the write has ended, for a check that must not wait.
  let finished = ManagedAtomicFlag()
  var error: Error? = nil
  /// The optimizer-state blob the write made (its hash), if the version has one.
  var stateHash: String? = nil
}

func l2(_ b: FloatBuffer) -> Float {
  let parts = UnsafeMutableBufferPointer<Double>.allocate(capacity: Parallel.threads)
  defer { parts.deallocate() }
  parts.initialize(repeating: 0)
  Parallel.forChunks(b.count) { c, s, e in parts[c] = DeltaKernels.fp32SquaredNorm(UnsafeRawPointer(b.pointer), range: s..<e).0 }
  return Float(parts.reduce(0, +).squareRoot())
}

