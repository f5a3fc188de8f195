import AgoraRounds
import AgoraCluster
import AgoraCrypto
import AgoraData
import AgoraDisclosure
import AgoraFineTune
import AgoraModel
import AgoraSecureAggregation
import AgoraStorage
import AgoraTensor
import AgoraTrainer
import AgoraTransport
import AgoraWire
import Foundation
import Logging

/// The node service: joins the federation, and for each round fetches the base version (checked by hash),
/// trains on its own data (which never leaves it), and sends Δ = θ_base − θ_local, compressed, signed and
/// sealed for the coordinator. A compute donor (`node.donor = true`) has no data: each round it trains on the
/// public shard the coordinator assigns (fetched by hash like a version).
public final class NodeService {
  public let config: NodeConfig
  let identity: Identity
  let coordinatorCard: EnrolmentCard
  /// Nil for a donor until its first shard arrives, and in a fine-tuning federation.
  public internal(set) var trainer: Trainer?
  /// A fine-tuning federation's trainer (`[finetune]`): LoRA adapters, or the whole model, on chat data.
  public internal(set) var fineTuner: FineTuner?
  /// What this node trains each round.
  var training: (any RoundTraining)? { fineTuner ?? trainer }
  let settings: TrainSettings
  let tokenizer: Tokenizer
  var shardHash: [UInt8] = []
  let endpoint: Endpoint
  let copy: VersionCopy
  let errorFeedback: FloatBuffer
  /// Where the node says what it does: swift-log (label `agora.node`) unless a caller sets its own.
  public var log: (String) -> Void = { [logger = Logger(label: "agora.node")] in logger.info("\($0)") }
  /// Told what happens, as typed events (`agora node --events`).
  public var observer: (any NodeObserver)?
  /// The live progress line while training (step, loss, tokens/s, ETA): rewritten in place on a terminal,
  /// a line every 10 s otherwise.
  public var progress: (String) -> Void = NodeService.defaultProgress
  static let defaultProgress: (String) -> Void = {
    let tty = isatty(STDOUT_FILENO) == 1
    nonisolated(unsafe) var last = Date.distantPast
    return { line in
      if tty { print("\r" + line, terminator: ""); fflush(stdout) } else if Date().timeIntervalSince(last) >= 10 { last = Date(); print(line) }
    }
  }()
  let stop = ManagedAtomicFlag()
  public internal(set) var roundsDone = 0
  /// Test-only misbehaviour (`AGORA_ADVERSARY`); nil for every real node.
  let adversary: Adversary?
  /// The targeted adversary's second model (experiments only).
  let attack: TargetedAttack?
  /// The base of the previous round (a stale-base adversary seals for it).
  var previousBase: [UInt8]? = nil
  /// When this node's last round ended (its update sent): the time until the next round's work starts is
  /// waiting (for the other nodes, the aggregation and the announcement).
  var lastRoundEnd: Date? = nil
  /// Secure aggregation's side of this node (nil when the federation does not use it).
  var secure: SecureAggregationClient? = nil
  /// With `rounds.overlap_steps`: θ as sent (then the progress since), the exchange thread's scratch for
  /// fetching the next version, and what that fetch brought (for the round's log).
  var carriedBuffer: FloatBuffer? = nil
  var prefetchBuffer: FloatBuffer? = nil
  var prefetched: (hash: [UInt8], sync: VersionCopy.Sync)? = nil

  /// DECLARATION (SPEC §4.5), sent after each WELCOME: what this institution declares about its training data,
  /// signed; nil when it declares nothing (`node.declaration` unset). What it lacks for a release is logged once.
  let declaration: (message: Message, hash: String, sources: Int, missing: [String])?
  var declarationSaid = false

  /// The MPI cluster this node spans (`mpirun -np K agora node`), of which this process is rank 0; nil for a
  /// node of one process.
  let cluster: Cluster?

  public init(config: NodeConfig, cluster: Cluster? = nil) throws {
    self.config = config
    self.cluster = cluster
    let fed = config.federation
    try config.requireFiles()
    if let cluster {
      guard cluster.isLeader else { throw ClusterError.config("rank \(cluster.rank) follows rank 0 (ClusterFollower)") }
      guard !config.donor else { throw ConfigError(file: config.path, key: "node.donor", problem: "a compute donor runs as one process, not under mpirun") }
    }
    if let t = config.threads { Parallel.threads = t }
    identity = try Identity.load(from: config.identity)
    coordinatorCard = try EnrolmentCard.load(fed.coordinatorCard)
    let fm = try fed.federatedModel(tokenizer: try Tokenizer(contentsOf: fed.tokenizer))
    tokenizer = fm.tokenizer
    try FileManager.default.createDirectory(atPath: config.workDir, withIntermediateDirectories: true)
    var s = fed.trainSettings
    let mc = fm.config
    s.model = mc
    s.seed = fed.seed ^ fnv1a(identity.card.fingerprint)  // each node draws its own batches
    s.precision = config.precision
    if let cluster { s.batch = try Cluster.rankBatch(fed, ranks: cluster.size, file: fed.path) }
    settings = s
    if let ft = fed.fineTune {
      guard !config.donor else { throw ConfigError(file: config.path, key: "node.donor", problem: "a fine-tuning federation ([finetune]) trains on its members' chat data: it has no public shards for a donor") }
      guard cluster == nil else { throw ClusterError.config("a fine-tuning federation's node runs as one process") }
      guard let base = try fed.fineTuneBase()?.base else { throw ConfigError(file: fed.path, key: "model.init", problem: "a fine-tuning federation needs its base") }
      let corpus = try ChatCorpus(dirs: config.data, tokenizer: fm.tokenizer, template: ft.template, maxTokens: mc.contextLength) { [name = config.name] in
        print("\(name): data: \($0)")
      }
      fineTuner = try FineTuner(settings: fed.fineTuneSettings(seed: s.seed, precision: s.precision, lora: fm.lora?.settings), base: base, corpus: corpus)
    } else if !config.donor {
      let sources = try LanguageSource.discover(config.data)
      let corpus = try TokenizedCorpus(sources: sources, tokenizer: tokenizer, tokenizerPath: fed.tokenizer, cacheDir: config.workDir + "/cache")
      trainer = try Trainer(settings: s, tokenizer: tokenizer, corpus: corpus)
      if fed.restrictedSoftmax { trainer?.restrictSoftmaxToCorpus() }
      if let cluster, let trainer { cluster.attach(trainer) }
    }
    // The languages its trainer found (a directory of language directories names each), not the directories.
    declaration = try NodeService.declaration(config, identity: identity, languages: fineTuner?.corpus.languages ?? trainer?.corpus.languages ?? [])
    copy = VersionCopy(header: fm.header, count: fm.count)
    errorFeedback = FloatBuffer(count: fm.count)
    terms = try fed.terms(fm)
    adversary = Adversary.from(node: config.name)
    attack = fed.fineTune != nil ? nil : try TargetedAttack(adversary: adversary, settings: s, tokenizer: tokenizer, tokenizerPath: fed.tokenizer, workDir: config.workDir)
    endpoint = try Endpoint.client(connect: fed.endpoint, serverKey: coordinatorCard.curvePublic,
                                   keys: CurveKeys(publicKey: identity.card.curvePublic, secretKey: identity.curveSecret))
    if fed.secureAggregation {
      secure = try SecureAggregationClient(endpoint: endpoint, identity: identity, federation: fed, embedding: (fm.embedding.offset, fm.embedding.rows, fm.embedding.width),
                                           stop: stop, log: { _ in })
      secure?.log = { [unowned self] in log($0) }
    }
  }

  public func requestStop() { stop.set() }

  /// Joins and serves rounds until the coordinator says the federation is finished (LEAVE, kind 1), the node is
  /// revoked or refused, or `requestStop`. A coordinator that stops or restarts (LEAVE, kind 0, or a session it
  /// no longer knows) is joined again as soon as it answers, for at most `node.rejoin_seconds`.
  public func run() throws {
    let name = config.name
    // The other ranks of a cluster node stop with this one, however it ends.
    defer { if let cluster { try? cluster.send(.exit) } }
    // The coordinator may still be starting (a warm start of version 0 takes minutes): keep asking, and say so.
    guard var w = try join(within: config.rejoinSeconds, sayAfter: 30) else {
      throw TransferError.timeout("no WELCOME from \(config.federation.endpoint) within \(Int(config.rejoinSeconds)) s (not running, wrong server key, or this node is not enrolled)")
    }
    log("\(name) joined \(config.federation.id): \(config.federation.preset), \(config.precision.summary), \(Parallel.threads) threads")
    observer?.node(.joined(again: false))
    // Heartbeats while training keeps this thread busy.
    let beatEvery = Locked(Double(w.heartbeat) / 1000)
    let beat = Thread { [endpoint, stop] in
      while !stop.isSet { Thread.sleep(forTimeInterval: beatEvery.value); endpoint.send(.heartbeat) }
    }
    beat.start()
    defer { stop.set() }
    var lastJoin = Date()
    /// LEAVE from the coordinator: true when the federation is finished; otherwise joins again once it is back.
    func ended(_ kind: LeaveKind, _ reason: String) throws -> Bool {
      observer?.node(.sessionEnded(finished: kind == .finished, reason: Printable.line(reason)))
      if kind == .finished {
        log("\(name): the coordinator says the federation is finished (\(Printable.line(reason))); leaving")
        return true
      }
      log("\(name): the coordinator ended the session (\(Printable.line(reason))); joining again when it is back")
      guard let again = try join(within: config.rejoinSeconds) else {
        throw TransferError.timeout("the coordinator did not come back within \(Int(config.rejoinSeconds)) s")
      }
      w = again
      beatEvery.value = Double(w.heartbeat) / 1000
      log("\(name) joined \(config.federation.id) again")
      observer?.node(.joined(again: true))
      return false
    }
    // With rounds.overlap_steps: the message that ended the last upload's exchange, and the next round's steps
    // trained meanwhile (kept until a round folds them in).
    var queued: Message? = nil
    var carried: CarriedSteps? = nil
    // The rounds this session has taken: a coordinator that waits repeats ROUND to nodes it has no update from
    // (SPEC §4.1), and a repeat of a round held already is not trained again. A new session starts afresh (a
    // coordinator that restarted holds its round again).
    var held: Set<UInt64> = []
    var idleSince = Date()
    while !stop.isSet {
      let msg: Message
      if let q = queued {
        msg = q
        queued = nil
      } else {
        guard let m = endpoint.receive(timeout: 1), case .success(let next) = m.message else {
          // No wait is silent: a node idle for a minute says what it waits for.
          if Date().timeIntervalSince(idleSince) >= NodeService.idleReportSeconds {
            idleSince = Date()
            log("\(name): waiting for the coordinator's next round (" + (held.max().map { "the last taken was round \($0)" } ?? "none taken yet") + ")")
          }
          continue
        }
        msg = next
      }
      switch msg {
      case .round(let r, _, _, _, _, _, _, _, _, _, _, _) where held.contains(r):
        continue  // announced again while this node held it (or after it sent its update)
      case .round(let r, let baseHash, let steps, let batch, let lrBits, let deadlineMs, let modelBytes, let patchFrom, let patchHash, let shard, let version, let signature):
        held.insert(r)
        defer { idleSince = Date() }
        let deadline = Date(timeIntervalSince1970: Double(deadlineMs) / 1000)
        // Only a version the coordinator signed is trained on.
        guard signedByCoordinator(version: version, hash: baseHash, parent: patchFrom, signature: signature) else {
          abandon(round: r, "version \(version) (\(hex(baseHash).prefix(12))) is not signed by the coordinator's key")
          continue
        }
        // The settings the round announces are the federation's: a node set otherwise does not train.
        let ownSteps = UInt32(config.federation.innerSteps(round: Int(clamping: r)))
        guard batch == terms.batch, lrBits == terms.learningRateBits, steps == ownSteps else {
          abandon(round: r, "the round asks batch \(batch), learning rate \(Float(bitPattern: lrBits)), \(steps) steps; this node is set to batch \(terms.batch), learning rate \(Float(bitPattern: terms.learningRateBits)), \(ownSteps) steps in round \(r) (\(config.federation.path))")
          continue
        }
        do {
          let ahead = carried
          carried = nil
          let pending = try runRound(round: r, version: version, baseHash: baseHash, patch: (patchFrom, patchHash), shard: shard, steps: Int(steps),
                                     modelBytes: Int(modelBytes), deadline: deadline, chunk: w.chunk, recipient: w.aggregationKey, carried: ahead)
          if pending.overlapping {
            lastRoundEnd = pending.handoff
            (queued, carried) = try overlap(pending)
          } else {
            try pending.send()
            lastRoundEnd = Date()
          }
        } catch TransferError.sessionEnded(let kind, let reason) {
          if try ended(kind, reason) { return }
          held = []
        } catch TransferError.rejected(let code, let text) where code == ErrorCode.notJoined.rawValue {
          log("\(name): round \(r) abandoned: \(Printable.line(text)); joining again")
          lastJoin = Date()
          held = []
          endpoint.send(joinMessage)
        } catch TransferError.rejected(let code, let text) where code == ErrorCode.revoked.rawValue {
          throw TransferError.rejected(code: code, message: text)
        } catch TransferError.rejected(let code, let text) {
          // The coordinator refused this node's update (or its transfer): it knows; nothing to tell it.
          log("\(name): round \(r): update refused (code \(code)): \(Printable.line(text))")
          observer?.node(.updateRefused(round: r, code: code, reason: Printable.line(text)))
        } catch {
          if stop.isSet { log("\(name): round \(r) abandoned: stopping") } else { abandon(round: r, "\(error)") }
        }
      case .leave(let kind, let reason):
        if try ended(kind, reason) { return }
        held = []
      case .error(let code, let text, _) where code == ErrorCode.revoked.rawValue:
        throw TransferError.rejected(code: code, message: text)
      case .error(let code, _, _) where code == ErrorCode.notJoined.rawValue:
        // The coordinator expired this session (or restarted): join again, at most once a second.
        if Date().timeIntervalSince(lastJoin) > 1 {
          lastJoin = Date()
          log("\(name): the coordinator no longer knows this session; joining again")
          held = []
          endpoint.send(joinMessage)
        }
      case .welcome(_, let hb, _, _, _, _):
        // The answer to a JOIN sent again from this loop (a session the coordinator no longer knew).
        beatEvery.value = Double(hb) / 1000
        observer?.node(.joined(again: true))
        sendDeclaration()
      default:
        continue
      }
    }
    endpoint.send(.leave(kind: .session, reason: "node stopping"))
    Thread.sleep(forTimeInterval: 0.2)
  }

  /// How long a node waits idle before it says what it waits for.
  static let idleReportSeconds: Double = 60

  /// Whether the coordinator signed version `version` (`hash`, whose parent is `parent`): a node trains on nothing else.
  func signedByCoordinator(version: UInt64, hash: [UInt8], parent: [UInt8], signature: [UInt8]) -> Bool {
    Sodium.verify(signature, message: VersionStatement.bytes(federation: config.federation.id, number: version, hash: hash, parent: parent),
                  publicKey: coordinatorCard.signPublic)
  }

  /// What this node trains with, as JOIN states it.
  var terms: TrainingTerms

  var joinMessage: Message {
    .join(name: config.name, software: "agora/0.1.0", latestVersion: copy.hash.isEmpty ? Message.noHash : copy.hash, role: config.donor ? 1 : 0, terms: terms)
  }

  /// Sends JOIN (again after 2.5 s, then at doubling intervals up to 20 s: a coordinator busy with a warm start
  /// finds one JOIN per interval queued, not hundreds to answer) until WELCOME, for at most `seconds`; nil if
  /// nothing answered. A refusal
  /// (other terms, not enrolled, revoked) is thrown: joining again would not change it.
  func join(within seconds: Double, sayAfter: Double? = nil) throws -> (chunk: Int, heartbeat: UInt32, aggregationKey: [UInt8])? {
    let start = Date(), end = Date(timeIntervalSinceNow: seconds)
    var sent = Date.distantPast
    var interval = 2.5
    var said = false
    while Date() < end && !stop.isSet {
      if let after = sayAfter, !said, Date().timeIntervalSince(start) > after {
        said = true
        log("\(config.name): no answer yet from \(config.federation.endpoint) (still starting, not running, a wrong server key, or this node is not enrolled); trying for up to \(Int(seconds)) s")
      }
      if Date().timeIntervalSince(sent) >= interval {
        if sent != .distantPast { interval = min(20, interval * 2) }
        endpoint.send(joinMessage)
        sent = Date()
      }
      guard let m = endpoint.receive(timeout: 0.5) else { continue }
      switch m.message {
      case .success(.welcome(let fed, let hb, _, let chunk, _, let key)):
        guard fed == config.federation.id else { throw ConfigError(file: config.path, key: "node.federation", problem: "the coordinator runs federation \(Printable.line(fed))") }
        guard key == coordinatorCard.aggregationPublic else { throw ConfigError(file: config.federation.path, key: "federation.coordinator_card", problem: "the coordinator's aggregation key differs from the card's") }
        sendCounts()
        sendDeclaration()
        return (Int(chunk), hb, key)
      case .success(.error(let code, let text, _)) where code == ErrorCode.termsMismatch.rawValue:
        observer?.node(.refused(reason: Printable.line(text)))
        throw ConfigError(file: config.federation.path, key: "-", problem: "the coordinator refused this node: " + Printable.line(text))
      case .success(.error(let code, let text, _)) where code != ErrorCode.notJoined.rawValue:
        observer?.node(.refused(reason: "code \(code): " + Printable.line(text)))
        throw TransferError.rejected(code: code, message: Printable.line(text))
      default: continue
      }
    }
    return nil
  }

  /// COUNTS, once per session, when the federation weighs embedding rows by token counts: how often each token
  /// occurs in this institution's training text, zero below `rounds.token_count_minimum` (a donor sends none).
  func sendCounts() {
    let fed = config.federation
    guard fed.embeddingRows == .token_counts, let corpus = trainer?.corpus else { return }
    let counts = EmbeddingRowWeights.sentCounts(corpus.tokenCounts(vocabSize: tokenizer.vocabSize), minimum: fed.tokenCountMinimum)
    var w = ByteWriter(capacity: counts.count * 4)
    for c in counts { w.u32(c) }
    endpoint.send(.counts(vocabulary: UInt32(counts.count), minimum: UInt32(fed.tokenCountMinimum), payload: Payload(w.bytes)))
    log("\(config.name): sent token counts: \(counts.filter { $0 > 0 }.count) of \(counts.count) tokens (those its text holds at least \(fed.tokenCountMinimum) times), \(w.bytes.count) bytes")
  }

  /// The declaration file's sources that cover this node's `languages`, as DECLARATION: JSON, its BLAKE2b-256 and
  /// the node's signature. A file that declares none of them is a configuration error.
  static func declaration(_ config: NodeConfig, identity: Identity, languages: [String]) throws -> (message: Message, hash: String, sources: Int, missing: [String])? {
    guard let path = config.declaration else { return nil }
    let d: Declaration
    do { d = try DeclarationFile.load(path).covering(languages) } catch let e as DeclarationError {
      throw ConfigError(file: e.file, key: e.key, problem: e.problem + " (node.declaration of \(config.path))")
    }
    guard !d.sources.isEmpty else {
      throw ConfigError(file: path, key: "source", problem: "no source covers this node's languages (\(languages.joined(separator: ", "))): list them in each source's languages (node.declaration of \(config.path))")
    }
    let json = try d.json()
    let signature = try Sodium.sign(Declaration.statement(federation: config.federation.id, payload: json), secretKey: identity.signSecret)
    let hash = Sodium.blake2b(json)
    return (.declaration(hash: hash, signature: signature, payload: Payload(json)), hex(hash), d.sources.count, d.missing(trained: languages))
  }

  /// DECLARATION after WELCOME: the coordinator records it if it is new (a changed file is a new declaration from
  /// the next round on).
  func sendDeclaration() {
    guard let d = declaration else {
      if !declarationSaid, !config.donor {
        declarationSaid = true
        log("\(config.name): declares nothing about its training data (node.declaration): it may train, but a release of a version it contributes to will name it")
      }
      return
    }
    endpoint.send(d.message)
    guard !declarationSaid else { return }
    declarationSaid = true
    log("\(config.name): sent its declaration of training data \(d.hash.prefix(16)) (\(d.sources) source\(d.sources == 1 ? "" : "s"))"
        + (d.missing.isEmpty ? "" : "; a release will need: " + d.missing.joined(separator: "; ")))
  }

  /// The last version this node scored (a round that repeats a version is not scored again).
  var lastEvaluated: UInt64? = nil
  var evaluator: Evaluator? = nil

  /// Federated evaluation: scores the round's base version (in the trainer, before any step) on the first
  /// `rounds.node_eval_windows` windows of each of this node's languages with validation text, and sends the
  /// figures, signed (EVALUATION): only numbers leave the node.
  func evaluate(version: UInt64, hash: [UInt8], training: any RoundTraining) throws {
    let fed = config.federation
    let ev: any LanguageScoring
    if let trainer {
      let e = evaluator ?? Evaluator(corpus: trainer.corpus, tokenizer: tokenizer, maxWindows: fed.nodeEvalWindows)
      evaluator = e
      ev = e
    } else {
      ev = training.scoring  // chat data: the answer tokens of the validation conversations
    }
    if fed.restrictedSoftmax { trainer?.model.restrictSoftmax(to: nil) }  // versions are scored over the whole vocabulary
    defer { if fed.restrictedSoftmax { trainer?.restrictSoftmaxToCorpus() } }
    let t0 = Date()
    var byName: [String: LanguageScore] = [:]
    for s in try ev.scores(model: training.model, languages: nil, windows: fed.nodeEvalWindows) {
      let name = LanguageTokens.wireName(s.language)
      byName[name] = LanguageScore(language: name, bitsPerByte: Float(s.bitsPerByte), bytes: UInt64(s.bytes),
                                   alone: config.aloneBitsPerByte[s.language].map(Float.init) ?? .nan)
    }
    let scores = byName.values.sorted { LanguageTokens.precedes($0.language, $1.language) }.prefix(LanguageTokens.maxCount)
    lastEvaluated = version
    guard !scores.isEmpty else { return }
    let statement = LanguageScore.statement(federation: fed.id, version: version, hash: hash, scores: Array(scores))
    endpoint.send(.evaluation(version: version, hash: hash, scores: Array(scores), signature: try Sodium.sign(statement, secretKey: identity.signSecret)))
    observer?.node(.evaluated(version: version, scores: scores.map { ($0.language, Double($0.bitsPerByte)) }))
    log("\(config.name): version \(version) on its own validation text: " + scores.map { String(format: "%@ %.3f", $0.language, $0.bitsPerByte) }.joined(separator: ", ")
        + String(format: " bits/byte (%.1f s)", Date().timeIntervalSince(t0)))
  }

  /// Tells the coordinator this node will send nothing for round `r` (so the round need not wait for it), and logs why.
  func abandon(round r: UInt64, _ why: String) {
    log("\(config.name): round \(r) abandoned: \(why)")
    observer?.node(.roundAbandoned(round: r, reason: why))
    endpoint.send(.error(code: ErrorCode.internalError.rawValue, message: "node abandons round \(r): " + String(why.prefix(900)), subject: .round(r)))
  }

  /// A donor's data for this round: the assigned public shard, fetched by hash (once), tokenized in its work
  /// directory, and handed to the trainer (created with the first shard).
  func takeShard(_ hash: [UInt8]) throws -> String {
    guard hash != Message.noHash else { throw TransferError.protocolViolation("a donor's ROUND names no public shard") }
    if hash == shardHash, let t = trainer { return t.corpus.languages.joined(separator: ",") }
    var blob: [UInt8] = []
    _ = try BlobFetcher(endpoint: endpoint).fetch(hash: hash) { chunk in
      guard blob.count + chunk.count <= 64 << 20 else { throw ShardError.malformed("longer than 64 MiB") }
      blob += chunk
    }
    let (lang, index, text) = try PublicShards.parse(blob)
    let dir = config.workDir + "/shard/" + lang
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try AtomicFile.write(Data(text), to: dir + "/train.txt")
    let corpus = try TokenizedCorpus(sources: [LanguageSource(name: lang, train: dir + "/train.txt", valid: nil)], tokenizer: tokenizer,
                                     tokenizerPath: config.federation.tokenizer, cacheDir: config.workDir + "/shard-cache")
    if let t = trainer { try t.use(corpus: corpus) } else { trainer = try Trainer(settings: settings, tokenizer: tokenizer, corpus: corpus) }
    if config.federation.restrictedSoftmax { trainer?.restrictSoftmaxToCorpus() }
    shardHash = hash
    log("\(config.name): public shard \(lang) #\(index) (\(text.count) bytes, \(hex(hash).prefix(12)))")
    return lang
  }

  public func shutdown() { endpoint.close() }
}
