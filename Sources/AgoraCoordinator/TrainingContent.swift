import AgoraCrypto
import AgoraDisclosure
import AgoraRegistry
import AgoraRounds
import AgoraTransport
import AgoraWire
import Foundation

extension TrainingContentSummary {
  /// The public summary of version `number`: the contributions of the rounds of its lineage (never a round
  /// outside it), each contributor's declarations in effect in those rounds, the coordinator's declaration of
  /// its public corpus when version 0's warm start or a donor used it, and the federation's `[provider]`.
  /// A declaration whose signature no longer verifies (altered in the registry) counts as none and is named.
  public static func of(_ number: Int, in store: Registry, provider: Provider, releaseDay: String? = nil) throws -> TrainingContentSummary {
    let v = try store.version(number)
    let lineage = try store.lineage(number)
    let rounds = Set(lineage.map(\.round).filter { $0 > 0 })
    let times = Dictionary(try store.rounds().map { ($0.number, ($0.startedAt, $0.endedAt)) }, uniquingKeysWith: { a, _ in a })
    let all = try store.declarations()
    var problems: [String] = []
    func signed(_ r: DeclarationRecord) -> SignedDeclaration? {
      let bytes = Array(r.json.utf8)
      guard let key = unhex(r.signKey), let sig = unhex(r.signature), hex(Sodium.blake2b(bytes)) == r.hash,
            Sodium.verify(sig, message: Declaration.statement(federation: store.federation, payload: bytes), publicKey: key),
            let d = try? Declaration.parse(bytes, source: "the registry's declaration \(r.hash.prefix(12))") else {
        problems.append("\(r.name) (\(r.node.prefix(16))): declaration \(r.hash.prefix(12)) in the registry no longer matches its signature (altered): not used")
        return nil
      }
      return SignedDeclaration(hash: r.hash, signature: r.signature, recordedAt: r.recordedAt, declaration: d)
    }
    let byDeclarant = Dictionary(grouping: all, by: \.node)  // each node's declarations, oldest first, read once
    var byNode: [String: (name: String, role: String, tokens: [String: Int], records: [Int64: DeclarationRecord])] = [:]
    for c in try store.contributions() where rounds.contains(c.round) {
      var k = byNode[c.node] ?? (c.name, c.role.rawValue, [:], [:])
      for (l, t) in c.tokensPerLanguage { k.tokens[l, default: 0] += t }
      if let (start, end) = times[c.round] {
        for r in Registry.inEffect(byDeclarant[c.node] ?? [], from: start, to: end) { k.records[r.id ?? 0] = r }
      }
      byNode[c.node] = k
    }
    let contributors = byNode.keys.sorted().map { fp -> SummaryContributor in
      let k = byNode[fp]!
      return SummaryContributor(name: k.name, fingerprint: fp, role: k.role, tokensPerLanguage: k.tokens,
                                declarations: k.records.keys.sorted().compactMap { signed(k.records[$0]!) })
    }
    let publicRecords = all.filter { $0.role == "coordinator" }
    let publicRecord = publicRecords.last { $0.recordedAt <= v.createdAt } ?? publicRecords.first
    let base = try VersionExport.baseModel(of: number, in: store).map { b in
      SummaryInput.Dependency(name: b.nameOrPath ?? b.directory, hash: b.hash, license: b.license,
                              relation: b.fineTune.map { "fine-tuned from it: \($0)" } ?? "imported as version 0 and trained further")
    }
    var input = SummaryInput(federation: store.federation, version: number, hash: v.hash, provider: provider, base: base, contributors: contributors,
                             warmStartTokens: lineage.last?.tokens ?? 0, publicCorpus: publicRecord.flatMap(signed), coordinator: publicRecord?.node ?? "")
    input.releaseDay = releaseDay
    var summary = compile(input)
    summary.releaseProblems = problems + summary.releaseProblems
    return summary
  }
}

/// The coordinator's side of declarations (SPEC §4.5): a node's DECLARATION, and its own of the public corpus.
extension CoordinatorService {
  /// How many different declarations one node may have recorded over the federation's life.
  static let maxDeclarationsPerNode = 64

  /// DECLARATION from a node: checked (its hash, its signature by the node's enrolled key, the declaration's
  /// form) and recorded if it is new; anything else is refused with ERROR(1) naming why, and nothing is recorded.
  func takeDeclaration(from m: Inbound, hash: [UInt8], signature: [UInt8], payload: Payload) {
    let who = displayName(m.userID)
    func refuse(_ why: String) {
      endpoint.send(.error(code: ErrorCode.malformed.rawValue, message: "declaration refused: " + why, subject: .none), to: m.peer)
      log("  \(who): declaration refused: \(why)")
    }
    let bytes = payload.array
    guard Sodium.blake2b(bytes) == hash else { return refuse("its hash \(hex(hash).prefix(16))… is not the BLAKE2b-256 of its payload (altered on the way?)") }
    guard let card = enrolment.card(fingerprint: m.userID),
          Sodium.verify(signature, message: Declaration.statement(federation: config.federation.id, payload: bytes), publicKey: card.signPublic) else {
      return refuse("not signed by this node's key")
    }
    do {
      _ = try Declaration.parse(bytes, source: "DECLARATION from \(who)")
      // Declarations are kept for good: a node that keeps changing its own cannot fill the registry.
      let kept = try store.declarations(node: m.userID)
      if kept.last?.hash != hex(hash), kept.count >= CoordinatorService.maxDeclarationsPerNode {
        return refuse("this node has recorded \(kept.count) declarations, the most a node may (ask the coordinator's operator)")
      }
      let role = sessions.session(m.userID)?.donor == true ? "donor" : "institution"
      let new = try store.record(declaration: DeclarationRecord(node: m.userID, name: card.name, role: role, hash: hex(hash), json: String(decoding: bytes, as: UTF8.self),
                                                                signature: hex(signature), signKey: hex(card.signPublic), recordedAt: Date().timeIntervalSince1970))
      if new { log("  \(who) declared its training data: declaration \(hex(hash).prefix(16))") }
    } catch let e as DeclarationError {
      refuse(e.problem + (e.key == "-" ? "" : " (\(e.key))"))
    } catch {
      log("  \(who): declaration not recorded: \(error)")
    }
  }

  /// The coordinator's own declaration of its public corpus (`public.declaration`), signed and recorded like a
  /// node's, at start-up.
  func declarePublicCorpus() throws {
    guard let path = config.federation.publicDeclaration else { return }
    let d: Declaration
    do { d = try DeclarationFile.load(path) } catch let e as DeclarationError {
      throw ConfigError(file: e.file, key: e.key, problem: e.problem + " (public.declaration of \(config.federation.path))")
    }
    let json = try d.json()
    let hash = Sodium.blake2b(json)
    let sig = try Sodium.sign(Declaration.statement(federation: config.federation.id, payload: json), secretKey: identity.signSecret)
    if try store.record(declaration: DeclarationRecord(node: identity.card.fingerprint, name: identity.card.name, role: "coordinator", hash: hex(hash),
                                                       json: String(decoding: json, as: UTF8.self), signature: hex(sig), signKey: hex(identity.card.signPublic),
                                                       recordedAt: Date().timeIntervalSince1970)) {
      logSink("  the public corpus's declaration \(hex(hash).prefix(16)) recorded (\(d.sources.count) sources)")
    }
  }
}
