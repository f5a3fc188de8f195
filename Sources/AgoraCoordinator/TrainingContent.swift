import AgoraCrypto
import AgoraDisclosure
import AgoraRegistry
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
    var byNode: [String: (name: String, role: String, tokens: [String: Int], records: [Int64: DeclarationRecord])] = [:]
    for c in try store.contributions() where rounds.contains(c.round) {
      var k = byNode[c.node] ?? (c.name, c.role.rawValue, [:], [:])
      for (l, t) in c.tokensPerLanguage { k.tokens[l, default: 0] += t }
      if let (start, end) = times[c.round] {
        for r in Registry.inEffect(all.filter { $0.node == c.node }, from: start, to: end) { k.records[r.id ?? 0] = r }
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
