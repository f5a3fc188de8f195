import AgoraRounds
import AgoraCrypto
import AgoraData
import AgoraModel
import AgoraStorage
import AgoraTransport
import AgoraWire
import Foundation

/// The coordinator's side of the vocabulary phase: before version 0, when the federation's vocabulary is
/// federated and not yet learned. It admits enrolled nodes (ZAP), takes each node's signed count tables,
/// (sealed to its aggregation key), waits for `tokenizer.contributors` nodes to answer (every enrolled one by default; a compute donor answers
/// that it holds no text) or `tokenizer.phase_seconds`, adds
/// the public corpus's counts if it holds one, learns the merges with the configured balance, writes
/// tokenizer.json where `model.tokenizer` says and a summary of who contributed what (`vocabulary.json` in the
/// data directory), and sends every node that asked the tokenizer, signed.
public final class VocabularyPhase {
  public let config: CoordinatorConfig
  public var log: (String) -> Void = { print($0) }
  /// Told once the phase is bound (nodes can send their tables): the coordinator's `listening` event.
  public weak var observer: (any CoordinatorObserver)?

  public init(config: CoordinatorConfig) { self.config = config }

  /// Whether a coordinator or node of this federation must go through the phase first.
  public static func needed(_ fed: FederationConfig) -> Bool {
    fed.vocabulary != nil && !FileManager.default.fileExists(atPath: fed.tokenizer)
  }

  /// One node's contribution.
  struct Contribution {
    var name: String
    var tables: [String: PreTokenCounts] = [:]
    var done = false
    var peer: [UInt8] = []
  }

  public func run(stop: ManagedAtomicFlag = ManagedAtomicFlag()) throws -> Tokenizer {
    let fed = config.federation
    guard let v = fed.vocabulary else { throw ConfigError(file: fed.path, key: "tokenizer.federated", problem: "the vocabulary is not federated") }
    let identity = try Identity.load(from: config.identity)
    guard let aggP = identity.card.aggregationPublic, let aggS = identity.aggregationSecret else {
      throw ConfigError(file: config.identity, key: "-", problem: "not a coordinator identity (no aggregation key; use agora keygen --coordinator)")
    }
    let enrolment = try EnrolmentRegistry.load(directory: config.enrolled)
    let zap = ZAPHandler(registry: enrolment, log: { [log] in log("  " + $0) })
    try zap.start()
    defer { zap.stop() }
    let endpoint = try Endpoint.server(bind: config.bind, keys: CurveKeys(publicKey: identity.card.curvePublic, secretKey: identity.curveSecret))
    defer { endpoint.close() }
    let expected = v.contributors ?? enrolment.cards.count
    observer?.coordinator(.listening(endpoint: endpoint.boundEndpoint, version: nil))
    log("vocabulary phase of \(fed.id): waiting for count tables from \(expected) node\(expected == 1 ? "" : "s") (at most \(Int(v.phaseSeconds)) s) on \(endpoint.boundEndpoint)")
    var from: [String: Contribution] = [:]
    var askers: [String: [UInt8]] = [:]  // fingerprint → peer, also nodes with no text
    let deadline = Date(timeIntervalSinceNow: v.phaseSeconds)
    while Date() < deadline && !stop.isSet && from.values.filter(\.done).count < expected {
      guard let m = endpoint.receive(timeout: 0.2) else { continue }
      let who = enrolment.card(fingerprint: m.userID)
      guard let card = who else { continue }
      let name = Printable.line(card.name)
      guard case .success(let msg) = m.message else {
        if case .failure(let e) = m.message { endpoint.send(.error(code: e.code.rawValue, message: e.description, subject: .none), to: m.peer) }
        continue
      }
      switch msg {
      case .vocabulary(let remaining, let signature, let payload):
        // Sealed to the coordinator's aggregation key (crypto_box_seal), as updates are.
        guard let bytes = try? Sodium.sealOpen(payload.array, publicKey: aggP, secretKey: aggS) else {
          endpoint.send(.error(code: ErrorCode.malformed.rawValue, message: "the count table is not sealed to this coordinator's aggregation key", subject: .none), to: m.peer)
          log("  \(name): a count table that does not open, refused")
          continue
        }
        guard Sodium.verify(signature, message: VocabularyStatement.table(federation: fed.id, table: bytes), publicKey: card.signPublic) else {
          endpoint.send(.error(code: ErrorCode.malformed.rawValue, message: "the count table is not signed by this node's key", subject: .none), to: m.peer)
          log("  \(name): a count table with a bad signature, refused")
          continue
        }
        askers[m.userID] = m.peer
        var c = from[m.userID] ?? Contribution(name: name)
        if bytes != VocabularyStatement.noText {
          do {
            let t = try PreTokenCounts(decoding: bytes)
            c.tables[t.language] = t  // a table sent again (the node restarted) replaces the first
            log("  \(name): \(t.language) — \(t.entries.count) pre-tokens from \(t.bytes) bytes of text (\(bytes.count) bytes of table)")
          } catch {
            endpoint.send(.error(code: ErrorCode.malformed.rawValue, message: "\(error)", subject: .none), to: m.peer)
            log("  \(name): count table refused: \(error)")
            continue
          }
        } else {
          log("  \(name) holds no text (a compute donor); it will get the tokenizer")
        }
        if remaining == 0 && !c.done {
          c.done = true
          if !c.tables.isEmpty { log("  \(name) has sent its \(c.tables.count) table\(c.tables.count == 1 ? "" : "s")") }
        }
        c.peer = m.peer
        from[m.userID] = c
      case .join:
        endpoint.send(.error(code: ErrorCode.notJoined.rawValue, message: "the federation's vocabulary is being learned; send your count tables (VOCABULARY) first",
                             subject: .none), to: m.peer)
      default:
        continue
      }
    }
    guard !stop.isSet else { throw TransferError.timeout("stopped during the vocabulary phase") }
    if from.values.filter(\.done).count < expected { log("  the phase ends with \(from.values.filter(\.done).count) of \(expected) nodes answered (deadline)") }
    let done = from.filter { $0.value.done && !$0.value.tables.isEmpty }
    guard !done.isEmpty else { throw TransferError.timeout("no node sent its count tables within \(Int(v.phaseSeconds)) s; no vocabulary") }
    // The sum per language, over the nodes in fingerprint order (the sums are exact integers: order does not matter).
    var tables = done.keys.sorted().flatMap { done[$0]!.tables.values }
    var publicBytes: [String: UInt64] = [:]
    if !fed.publicData.isEmpty {
      for s in try LanguageSource.discover(fed.publicData) {
        let t = PreTokenCounts.count(language: s.name, texts: [try LanguageText.read(s.train, maxBytes: v.maxBytesPerLanguage)])
        publicBytes[s.name] = t.bytes
        tables.append(t)
      }
    }
    let merged = try VocabularyTables.merge(tables)
    var trainer = BPETrainer()
    for t in merged { trainer.add(t) }
    let size = try v.size ?? GPTConfig.preset(fed.preset).vocabSize
    let t0 = Date()
    let tok = try trainer.train(vocabSize: size, balance: v.balance)
    let json = [UInt8](tok.jsonData())
    let hash = Sodium.blake2b(json)
    try AtomicFile.write(Data(json), to: fed.tokenizer, createDirectory: true)
    try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true)
    // Fairness, for the model card: tokens per octet on the counts, and the premium on parallel text where this
    // machine has gettext catalogues in the federation's languages.
    let perByte = trainer.tokensPerByte(tok)
    let parallel = (try? ParallelText.fromMessageCatalogues(languages: merged.map(\.language))) ?? [:]
    let premium = TokenizerFairness(tokenizer: tok, texts: [], parallel: parallel).premiums
    try AtomicFile.write(Data(VocabularyPhase.summary(hash: hash, settings: v, contributions: done, publicBytes: publicBytes,
                                                      tokensPerByte: perByte, premium: premium, parallelSentences: parallel.values.first?.count ?? 0).utf8),
                         to: config.dataDir + "/vocabulary.json")
    log(String(format: "  learned %d merges from %d languages (%d nodes%@) in %.1f s, balance %@; tokenizer %@",
               tok.merges.count, merged.count, done.count, publicBytes.isEmpty ? "" : " and the public corpus", Date().timeIntervalSince(t0),
               "\(v.balance)", String(hex(hash).prefix(12))))
    let signature = try Sodium.sign(VocabularyStatement.tokenizer(federation: fed.id, hash: hash), secretKey: identity.signSecret)
    for (_, peer) in askers.sorted(by: { $0.key < $1.key }) { endpoint.send(.tokenizer(hash: hash, signature: signature, payload: Payload(json)), to: peer) }
    // Let the answers leave before the socket closes.
    Thread.sleep(forTimeInterval: 0.5)
    return tok
  }

  /// vocabulary.json: the tokenizer's hash, the settings, and per contributor the languages and their sizes.
  static func summary(hash: [UInt8], settings v: FederationConfig.VocabularySettings, contributions: [String: Contribution], publicBytes: [String: UInt64],
                      tokensPerByte: [String: Double], premium: [String: Double], parallelSentences: Int) -> String {
    let nodes = contributions.keys.sorted().map { fp -> String in
      let c = contributions[fp]!
      let langs = c.tables.keys.sorted().map { l in "\(jsonString(l)):{\"bytes\":\(c.tables[l]!.bytes),\"pre_tokens\":\(c.tables[l]!.entries.count)}" }
      return "{\"name\":\(jsonString(c.name)),\"fingerprint\":\"\(fp)\",\"languages\":{\(langs.joined(separator: ","))}}"
    }
    let pub = publicBytes.keys.sorted().map { "\(jsonString($0)):\(publicBytes[$0]!)" }
    let langs = tokensPerByte.keys.sorted().map { l in
      "\(jsonString(l)):{\"tokens_per_byte\":\(tokensPerByte[l]!),\"premium\":\(premium[l].map { "\($0)" } ?? "null")}"
    }
    return "{\"tokenizer\":\"\(hex(hash))\",\"balance\":\"\(v.balance)\",\"min_count\":\(v.minCount),\"min_documents\":\(v.minDocuments),\"noise\":\(v.noise),"
      + "\"contributors\":[\(nodes.joined(separator: ","))],\"public_corpus\":{\(pub.joined(separator: ","))},"
      + "\"parallel_sentences\":\(parallelSentences),\"languages\":{\(langs.joined(separator: ","))}}\n"
  }
}
