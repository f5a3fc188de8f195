import AgoraRounds
import AgoraCrypto
import AgoraData
import AgoraFineTune
import AgoraImport
import AgoraModel
import AgoraRegistry
import AgoraTensor
import AgoraTrainer
import AgoraTransport
import AgoraWire
import Foundation

/// Where the coordinator's log lines go; set once the service is made, read from the ZAP handler's thread too.
final class LogSink: @unchecked Sendable {
  private let lock = NSLock()
  private var sink: (String) -> Void = { print($0) }
  func callAsFunction(_ line: String) { lock.lock(); let f = sink; lock.unlock(); f(line) }
  func set(_ f: @escaping (String) -> Void) { lock.lock(); sink = f; lock.unlock() }
}

/// The coordinator service: admits enrolled nodes, announces rounds, receives sealed updates one at a time,
/// folds accepted ones into a running weighted sum (memory O(model) whatever the number of nodes), applies the
/// outer optimizer and publishes the next version. This file wires its parts together:
///
/// - `SessionTable`, `BlobServer`, `UploadReceiver` (AgoraTransport): who is connected, what is served, uploads;
/// - `RoundCollector`: one round's intake (checks, score, the running sum, tallies), fed by the receiver;
/// - `UpdateStaging`: where an update is decrypted (a buffer, or θ's memory for fp32 updates);
/// - `VersionStep`: the outer step, its patch and optimizer state;
/// - `VersionPersister`: the background write and commit of each version;
/// - `HeldRound` and `CoordinatorRound.swift`: a round from announcement to outcome; `CoordinatorResume.swift`: resume,
///   genesis and repair from the registry;
/// - a `CoordinatorObserver` (the dashboard, wired by `agora coordinator`) told what happens.
public final class CoordinatorService {
  public let config: CoordinatorConfig
  let identity: Identity
  /// The enrolled nodes' cards (who the ZAP handler admits); the registry's `nodes` table mirrors it.
  let enrolment: EnrolmentRegistry
  let zap: ZAPHandler
  public let endpoint: Endpoint
  let sessions: SessionTable
  let blobs: BlobServer
  let receiver: UploadReceiver
  public let modelConfig: GPTConfig
  /// What the versions are: the model, or a fine-tuning federation's adapters on its base.
  public let federated: FederatedModel
  /// θ, the current version's parameters.
  let params: FloatBuffer
  /// The round's running weighted sum of updates, then their mean, then the outer step.
  let sum: FloatBuffer
  let staging: UpdateStaging
  let stepper: VersionStep
  let persister: VersionPersister
  /// The evaluator (per-language bits per byte of each version) and the update scorer, with evaluation text.
  let evaluator: VersionScoring?
  let scorer: UpdateScorer?
  let logSink = LogSink()
  public var log: (String) -> Void {
    get { { [logSink] in logSink($0) } }
    set { logSink.set(newValue) }
  }
  /// Which updates reach the sum (norm bound from past rounds, claims); resumed from the registry.
  var acceptance: AcceptanceRule
  /// Where the token embedding matrix starts among the parameters.
  let embeddingOffset: Int
  /// Per node, V·q of its last COUNTS (`EmbeddingRowWeights`): how much more often than an average token its
  /// training text holds each token.
  var rowRelative: [String: [Float]] = [:]
  /// The round being held (its selection, intake, secure aggregation, donors' shards); nil between rounds.
  var held: HeldRound? = nil
  /// Called with each round's outcome (the round table).
  public var onRound: (RoundOutcome) -> Void = { _ in }
  /// Told what happens (the dashboard); set before `run`.
  public weak var observer: (any CoordinatorObserver)?
  /// The version the coordinator serves and the next round trains on: one value, set whole by `openStore`
  /// (resume or genesis), by a repair, and by each version step (`CurrentVersion.next`), never field by field.
  var current = CurrentVersion(number: 0, parent: 0, hash: [], parentHash: Message.noHash, signature: [UInt8](repeating: 0, count: 64))
  public var version: Int { current.number }
  public var versionHash: [UInt8] { current.hash }
  var versionParent: Int { current.parent }
  var parentHash: [UInt8] { current.parentHash }
  var versionSignature: [UInt8] { current.signature }
  /// The number the next version takes: one past the highest the registry has recorded.
  var nextNumber = 1
  /// The next version's optimizer state, written by the step under a temporary name until persisted.
  var pendingState: String? = nil
  /// The registry: blobs and metadata of every version, round and contribution.
  public let store: Registry
  /// The version this run started from and its bits per byte per language (empty without evaluation text).
  public private(set) var initialVersion = 0
  public private(set) var initialBitsPerByte: [(String, Double)] = []
  /// The first round this run will hold (after a restart, the one after the last recorded).
  public internal(set) var firstRound = 1
  let tokenizerHash: String
  /// TOKENIZER: tokenizer.json, its hash and the coordinator's signature — what a node that asks (VOCABULARY) gets.
  let tokenizerAnswer: Message
  let configJSON: String
  /// The safetensors header of every version blob of this model (`header ‖ parameters`).
  let weightsHeader: [UInt8]
  /// A fine-tuning federation's base (with the template's tokens) and its record, read once at start-up for
  /// version 0 and the scoring model, then let go (the scoring model holds its own copy); nil for pre-training.
  var fineTuneBase: (base: ChatBase, record: BaseModel)?
  /// The public corpus cut into shards for compute donors, and where the rotation over them stands.
  public private(set) var shards: [PublicShard] = []
  var shardCursor = 0
  /// Blobs the blob server found corrupt, to repair (`repairCorrupt`) on the coordinator's thread.
  var corruptFound: [[UInt8]] = []
  let stop = ManagedAtomicFlag()

  public init(config: CoordinatorConfig) throws {
    self.config = config
    let fed = config.federation
    identity = try Identity.load(from: config.identity)
    guard let aggP = identity.card.aggregationPublic, let aggS = identity.aggregationSecret else {
      throw ConfigError(file: config.identity, key: "-", problem: "not a coordinator identity (no aggregation key; use agora keygen --coordinator)")
    }
    try config.requireFiles()
    enrolment = try EnrolmentRegistry.load(directory: config.enrolled)
    let fm = try fed.federatedModel(tokenizer: try Tokenizer(contentsOf: fed.tokenizer))
    federated = fm
    let tokenizer = fm.tokenizer
    let mc = fm.config
    modelConfig = mc
    try mc.validate()
    let layout = ParameterLayout(mc)
    embeddingOffset = fm.embedding.offset
    params = FloatBuffer(count: fm.count, leading: DeltaCodec.headerBytes)
    sum = FloatBuffer(count: params.count)
    // The registry first: a data directory that cannot be used stops the coordinator before it listens.
    try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true)
    let st = try Registry(dataDir: config.dataDir, federation: fed.id, create: true)
    store = st
    configJSON = String(decoding: Checkpoint.configJSON(mc, eot: Int(tokenizer.eotID)), as: UTF8.self)
    weightsHeader = fm.header
    let json = [UInt8](tokenizer.jsonData())
    let th = try json.withUnsafeBytes { try st.writeBlob($0) }
    tokenizerHash = hex(th)
    tokenizerAnswer = .tokenizer(hash: th, signature: try Sodium.sign(VocabularyStatement.tokenizer(federation: fed.id, hash: th), secretKey: identity.signSecret),
                                 payload: Payload(json))
    staging = UpdateStaging(params: params, header: weightsHeader.count, trailer: fed.momentWeighting > 0 ? BlockMoments.trailerBytes(count: params.count) : 0)
    let outer = OuterOptimizer(kind: fed.outerOptimizer, count: params.count, lr: Float(fed.outerLR), momentum: Float(fed.outerMomentum),
                               momentumInMemory: false)
    stepper = VersionStep(outer: outer, params: params, sum: sum, weightsHeader: weightsHeader, store: st, patchDir: config.dataDir + "/patches",
                          patchFormat: fed.broadcast.patchFormat, seed: fed.seed)
    // A fine-tuning federation's base, grown by its template's tokens (version 0 and the scoring model need it).
    fineTuneBase = try fed.fineTuneBase()
    let sink0 = logSink
    evaluator = try fed.versionScoring(fm, base: fineTuneBase?.base, cacheDir: config.dataDir + "/eval-cache") { sink0("  evaluation data: " + $0) }
    scorer = evaluator.map { UpdateScorer(scoring: $0, windows: fed.scoreWindows, tolerance: fed.scoreTolerance, collateral: fed.scoreCollateral) }
    let sink = logSink
    zap = ZAPHandler(registry: enrolment, log: { line in sink("  " + line) })
    try zap.start()
    endpoint = try Endpoint.server(bind: config.bind, keys: CurveKeys(publicKey: identity.card.curvePublic, secretKey: identity.curveSecret))
    var p = SessionTable.Parameters(federation: fed.id, aggregationKey: aggP)
    p.chunkSize = 1 << 20
    p.terms = try fed.terms(fm)
    sessions = SessionTable(parameters: p, registry: enrolment, endpoint: endpoint)
    blobs = BlobServer(chunkSize: Int(p.chunkSize))
    persister = VersionPersister(store: st, blobs: blobs, header: weightsHeader, params: params)
    receiver = UploadReceiver(context: .init(federation: fed.id, round: 0, baseHash: Message.noHash,
                                             aggregationPublic: aggP, aggregationSecret: aggS, credit: 8), registry: enrolment)
    // Several uploads at once, each in a slot of the staging buffer as large as the federation's payloads (a ring
    // that grows with the participants is sized for every enrolled node taking part; enrolment is read once).
    let payloadBytes = fed.secureAggregation ? SecureEncoding.payloadBytes(count: params.count, bits: fed.secureAggregationRing.bits(participants: max(1, enrolment.cards.count)))
                                             : DeltaCodec.encodedSize(count: params.count, format: fed.compression.format)
                                               + (fed.momentWeighting > 0 ? BlockMoments.trailerBytes(count: params.count) : 0)
    receiver.maxActive = staging.configure(uploads: fed.concurrentUploads, payloadBytes: payloadBytes)
    if receiver.maxActive < fed.concurrentUploads {
      logSink("  rounds.concurrent_uploads = \(fed.concurrentUploads): \(receiver.maxActive) upload(s) at once (the staging buffer holds \(receiver.maxActive) \(fed.compression.rawValue) payload(s) of \(payloadBytes) bytes)")
    }
    acceptance = AcceptanceRule(factor: Float(fed.normBoundFactor), cosineFactor: Float(fed.cosineBoundFactor))
    try openStore(layout: layout)
    try openInvitations()
    fineTuneBase = nil
    try declarePublicCorpus()
    let recent = try store.recentNorms(rounds: acceptance.window)
    acceptance = AcceptanceRule(factor: Float(fed.normBoundFactor), cosineFactor: Float(fed.cosineBoundFactor), history: recent.norms, cosines: recent.cosines)
    if !fed.publicData.isEmpty {
      shards = try PublicShards.build(sources: try LanguageSource.discover(fed.publicData), bytes: fed.shardBytes, dir: config.dataDir + "/shards")
      for s in shards { try blobs.publish(path: s.path) }
    }
  }

  /// The coordinator's signing key (what checks its versions' signatures).
  public var signPublic: [UInt8] { identity.card.signPublic }

  /// Asks `run` to stop at the next message (SIGINT/SIGTERM): the current round is abandoned, never half-applied.
  public func requestStop() { stop.set() }

  /// The current version that `number` (made from version `parent`, hashing to `hash`, whose parent hashes to
  /// `parentHash`) is, signed by this coordinator.
  func signed(number: Int, parent: Int, hash: [UInt8], parentHash: [UInt8]) throws -> CurrentVersion {
    let signature = try Sodium.sign(VersionStatement.bytes(federation: config.federation.id, number: UInt64(number), hash: hash, parent: parentHash),
                                    secretKey: identity.signSecret)
    return CurrentVersion(number: number, parent: parent, hash: hash, parentHash: parentHash, signature: signature)
  }

  func notify(_ event: CoordinatorEvent) { observer?.coordinator(event) }

  /// Waits for the version being written (if any); rethrows its failure.
  func finishWrite() throws {
    if let h = try persister.finish() { stepper.stateHash = h }
  }

  /// θ's version blob, when it is written and intact (an fp32 update may then be staged in θ's memory).
  func currentBlob() -> String? { persister.written() ? store.blobPath(versionHash) : nil }

  /// Handles one inbound message of any kind.
  @discardableResult
  func pump(timeout: Double) -> Bool {
    defer {
      blobs.serve(endpoint: endpoint)
      while let h = corruptFound.popLast() { repairCorrupt(h) }
      if Date().timeIntervalSince(nodesToldAt) > 1 { tellNodes() }
    }
    guard let m = endpoint.receive(timeout: timeout) else { return false }
    if m.userID.hasPrefix(EnrolmentRegistry.invitationPrefix) {
      // An invitation's session (SPEC §2.2): ENROL, nothing else.
      takeInvitee(m)
      return true
    }
    switch sessions.handle(m) {
    case .handled: break
    case .dropped(let why): log("  dropped: \(why)")
    case .forward:
      if case .success(.error(_, let text, .round(let r))) = m.message {
        // A node says it will send nothing for round r (a bad version, other settings, a failure): not waited for.
        if let h = held, h.number == r { h.release(m.userID) }
        log("  \(displayName(m.userID)) abandons round \(r): \(Printable.line(text))")
      } else if case .success(.counts(let vocabulary, let minimum, let payload)) = m.message {
        takeCounts(from: m, vocabulary: Int(vocabulary), minimum: Int(minimum), payload: payload)
      } else if case .success(.declaration(let hash, let signature, let payload)) = m.message {
        takeDeclaration(from: m, hash: hash, signature: signature, payload: payload)
      } else if case .success(.evaluation(let v, let hash, let scores, let signature)) = m.message {
        takeEvaluation(from: m, version: v, hash: hash, scores: scores, signature: signature)
      } else if case .success(.vocabulary) = m.message {
        // After the vocabulary phase: the vocabulary is fixed; a node that joins later gets it (its tables are not used).
        endpoint.send(tokenizerAnswer, to: m.peer)
        log("  \(displayName(m.userID)) asked for the federation's tokenizer (the vocabulary is fixed; its counts are not used)")
      } else if case .success(let msg) = m.message, msg.isSecureAggregation {
        takeSecure(msg, from: m)
      } else if !blobs.handle(m, endpoint: endpoint) {
        _ = receiver.handle(m, endpoint: endpoint)
      }
    }
    return true
  }

  /// How log lines name a node: its session's (enrolment card's) name, else its card's (a node that has not
  /// joined yet), else its fingerprint's prefix.
  func displayName(_ fingerprint: String) -> String {
    sessions.session(fingerprint)?.name ?? enrolment.card(fingerprint: fingerprint).map { Printable.line($0.name) } ?? String(fingerprint.prefix(12))
  }

  /// COUNTS from a node: kept (as V·q) for weighing its embedding rows while `rounds.embedding_rows` asks for it.
  func takeCounts(from m: Inbound, vocabulary: Int, minimum: Int, payload: Payload) {
    let who = displayName(m.userID)
    guard vocabulary == modelConfig.vocabSize else {
      endpoint.send(.error(code: ErrorCode.malformed.rawValue, message: "COUNTS for \(vocabulary) tokens; the federation's vocabulary has \(modelConfig.vocabSize)",
                           subject: .none), to: m.peer)
      log("  \(who): COUNTS for \(vocabulary) tokens refused (the vocabulary has \(modelConfig.vocabSize))")
      return
    }
    guard config.federation.embeddingRows == .token_counts else { return }
    let counts = payload.withUnsafeBytes { raw in (0..<vocabulary).map { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) } }
    rowRelative[m.userID] = EmbeddingRowWeights.relative(counts: counts, rows: vocabulary)
    log("  \(who) sent token counts: \(counts.filter { $0 > 0 }.count) of \(vocabulary) tokens (those it holds at least \(minimum) times)")
  }

  /// EVALUATION from a node: its signed scores of a version on its own validation text, recorded in the registry.
  func takeEvaluation(from m: Inbound, version: UInt64, hash: [UInt8], scores: [LanguageScore], signature: [UInt8]) {
    let who = displayName(m.userID)
    func refuse(_ code: ErrorCode, _ why: String) {
      endpoint.send(.error(code: code.rawValue, message: why, subject: .none), to: m.peer)
      log("  \(who): evaluation refused: \(why)")
    }
    guard let card = enrolment.card(fingerprint: m.userID),
          Sodium.verify(signature, message: LanguageScore.statement(federation: config.federation.id, version: version, hash: hash, scores: scores),
                        publicKey: card.signPublic) else {
      return refuse(.malformed, "the evaluation of version \(version) is not signed by this node's key")
    }
    guard version <= UInt64(Int.max), let v = try? store.version(Int(version)), v.hash == hex(hash) else {
      return refuse(.unknownVersion, "no version \(version) with hash \(hex(hash).prefix(12)) in this federation")
    }
    let at = Date().timeIntervalSince1970, sig = hex(signature)
    do {
      try store.record(evaluations: scores.map {
        EvaluationRecord(version: v.number, node: m.userID, name: who, language: $0.language, bitsPerByte: Double($0.bitsPerByte), bytes: Int($0.bytes),
                         alone: $0.alone.isNaN ? nil : Double($0.alone), signature: sig, at: at)
      })
      log("  \(who) scores version \(version) on its own text: " + scores.map { String(format: "%@ %.3f", $0.language, $0.bitsPerByte) }.joined(separator: ", "))
    } catch {
      log("  \(who): evaluation of version \(version) not recorded: \(error)")
    }
  }

  var nodesToldAt = Date.distantPast
  /// Tells the observer who is connected.
  func tellNodes() {
    nodesToldAt = Date()
    let nodes = sessions.live.map { ConnectedNode(fingerprint: $0.fingerprint, name: $0.name, donor: $0.donor, lastSeen: $0.lastSeen.timeIntervalSince1970) }
    notify(.nodes(nodes, version: version))
  }

  /// Runs the configured number of rounds; returns their outcomes.
  @discardableResult
  public func run() throws -> [RoundOutcome] {
    let fed = config.federation
    nonisolated(unsafe) let logger = log
    sessions.log = { logger("  " + $0) }
    receiver.log = { logger("  " + $0) }
    log("coordinator of \(fed.id) listening on \(endpoint.boundEndpoint); model \(fed.preset), \(params.count) parameters, version \(version) \(hex(versionHash).prefix(12))")
    notify(.listening(endpoint: endpoint.boundEndpoint, version: version))
    initialVersion = version
    initialBitsPerByte = evaluate()
    tellNodes()
    // Wait (bounded) for the nodes that must be there before the first round.
    let joinDeadline = Date(timeIntervalSinceNow: fed.deadlineSeconds)
    if sessions.live.count < fed.minNodes {
      log("  waiting for \(fed.minNodes) node\(fed.minNodes == 1 ? "" : "s") to join (at most \(Int(fed.deadlineSeconds)) s)")
    }
    while sessions.live.count < fed.minNodes && Date() < joinDeadline && !stop.isSet { pump(timeout: 0.2) }
    var outcomes: [RoundOutcome] = []
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
      guard let outcome = try round(r) else { break }  // stopped: the round is abandoned, not recorded
      outcomes.append(outcome)
      onRound(outcome)
      notify(.roundEnded(outcome))
      r += 1
    }
    try finishWrite()
    // Stopped (SIGINT/SIGTERM): the session ends, the federation does not; nodes wait for the coordinator to return.
    let leave: Message = r > fed.rounds ? .leave(kind: .finished, reason: "the federation's rounds are over")
                                        : .leave(kind: .session, reason: "the coordinator is stopping; join again when it is back")
    for s in sessions.live { endpoint.send(leave, to: s.peer) }
    Thread.sleep(forTimeInterval: 0.3)
    return outcomes
  }

  /// Bits per byte of the current version per language (all evaluation windows); the scorer's model then holds
  /// θ. A round without a step (no quorum) can end with an fp32 update staged where θ is: θ comes back first.
  func evaluate() -> [(String, Double)] {
    guard let ev = evaluator else { return [] }
    do {
      try staging.restore(blob: store.blobPath(versionHash))
      ev.target.copy(from: params)
      return (try? ev.scoring.bitsPerByte(model: ev.model, windows: config.federation.evalWindows)) ?? []
    } catch {
      log("  version \(version) is not scored: \(error)")
      return []
    }
  }

  public func shutdown() {
    try? finishWrite()
    staging.deallocate()
    endpoint.close()
    zap.stop()
  }
}

/// The coordinator's current version: its number, the number it was made from, its hash, its parent's hash
/// (zero for version 0) and the coordinator's signature of the statement binding them (SPEC §5).
struct CurrentVersion: Equatable {
  var number: Int
  var parent: Int
  var hash: [UInt8]
  var parentHash: [UInt8]
  var signature: [UInt8]
}
