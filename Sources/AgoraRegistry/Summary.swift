import AgoraWire
import Foundation

/// Who trained a version on what: every institution and donor whose updates went into the version's
/// lineage, with tokens per language and per node, the rounds, and the compute spent. It is written into the
/// model card and as `training_data.json` (the kind of summary the EU AI Act, Art. 53, asks providers of
/// general-purpose models to publish).
public struct TrainingDataSummary: Codable, Sendable {
  public struct Contributor: Codable, Sendable {
    public var name: String
    public var fingerprint: String
    public var role: NodeRole
    public var rounds: Int
    public var tokens: Int
    public var steps: Int
    public var seconds: Double
    public var tokensPerLanguage: [String: Int]
  }
  public var federation: String
  public var version: Int
  public var hash: String
  public var rounds: [Int]
  public var tokens: Int
  public var tokensPerLanguage: [String: Int]
  public var contributors: [Contributor]
  public var steps: Int
  /// CPU-seconds the contributors reported, summed.
  public var nodeSeconds: Double
  public var bitsPerByte: [String: Double]
  /// What the institutions report on their own validation text (federated evaluation), versions up to this one.
  public var institutions: [LanguageStanding]

  /// The summary of `number`: contributions of the rounds that made the versions of its lineage.
  public static func of(_ number: Int, in store: Registry) throws -> TrainingDataSummary {
    let v = try store.version(number)
    let lineage = try store.lineage(number)
    let rounds = Set(lineage.map(\.round).filter { $0 > 0 })
    let all = try store.contributions().filter { rounds.contains($0.round) }
    var byNode: [String: Contributor] = [:]
    var perLanguage: [String: Int] = [:]
    for c in all {
      var k = byNode[c.node] ?? Contributor(name: c.name, fingerprint: c.node, role: c.role, rounds: 0, tokens: 0, steps: 0, seconds: 0, tokensPerLanguage: [:])
      k.rounds += 1
      k.tokens += c.tokens
      k.steps += c.steps
      k.seconds += c.seconds
      for (l, t) in c.tokensPerLanguage {
        k.tokensPerLanguage[l, default: 0] += t
        perLanguage[l, default: 0] += t
      }
      byNode[c.node] = k
    }
    return TrainingDataSummary(federation: store.federation, version: number, hash: v.hash, rounds: rounds.sorted(), tokens: all.reduce(0) { $0 + $1.tokens },
                               tokensPerLanguage: perLanguage, contributors: byNode.values.sorted { $0.tokens > $1.tokens },
                               steps: all.reduce(0) { $0 + $1.steps }, nodeSeconds: all.reduce(0) { $0 + $1.seconds },
                               bitsPerByte: v.bitsPerByteByLanguage, institutions: LanguageStanding.from(try store.evaluations(upTo: number)))
  }

  public func json() throws -> Data {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys]
    return try e.encode(self)
  }

  /// Text from nodes and files in a Markdown table cell of the model card: one line, HTML escaped (Hugging
  /// Face renders raw HTML in model cards), table pipes and Markdown's link and code characters escaped.
  public static func cell(_ s: String) -> String { MarkdownCell.escape(s) }

  public var markdown: String {
    var s = "| contributor | role | rounds | tokens | languages (tokens) | steps | CPU-seconds |\n| --- | --- | --- | --- | --- | --- | --- |\n"
    for c in contributors {
      let langs = c.tokensPerLanguage.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
      s += "| \(Self.cell(c.name)) (`\(c.fingerprint.prefix(12))`) | \(c.role.rawValue) | \(c.rounds) | \(c.tokens) | \(Self.cell(langs)) | \(c.steps) | \(String(format: "%.0f", c.seconds)) |\n"
    }
    s += "\nTokens per language: " + Self.cell(tokensPerLanguage.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")) + ".\n"
    s += "Rounds: \(rounds.map(String.init).joined(separator: ", ")); \(tokens) tokens in \(steps) optimizer steps, \(String(format: "%.0f", nodeSeconds)) CPU-seconds.\n"
    return s
  }

  /// The institutions' own scores as a Markdown table (empty when none reported).
  public var institutionsMarkdown: String {
    guard !institutions.isEmpty else { return "" }
    var s = "| language | institution | latest (version) | best (version) | trained alone |\n| --- | --- | --- | --- | --- |\n"
    for x in institutions {
      s += "| \(Self.cell(x.language)) | \(Self.cell(x.name)) | " + String(format: "%.3f (%d) | %.3f (%d) | ", x.latest, x.latestVersion, x.best, x.bestVersion)
        + (x.alone.map { String(format: "%.3f", $0) } ?? "—") + " |\n"
    }
    return s
  }
}

