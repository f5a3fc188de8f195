import AgoraText
import Foundation

/// A declaration as the coordinator recorded it: its hash, signature and when it arrived.
public struct SignedDeclaration: Sendable, Equatable {
  public var hash: String
  public var signature: String
  public var recordedAt: Double
  public var declaration: Declaration
  public init(hash: String, signature: String, recordedAt: Double, declaration: Declaration) {
    self.hash = hash; self.signature = signature; self.recordedAt = recordedAt; self.declaration = declaration
  }
}

/// One contributor to a version's lineage, with the declarations in effect in the rounds it contributed to.
public struct SummaryContributor: Sendable {
  public var name: String
  public var fingerprint: String
  /// "institution" or "donor" (a donor trains on the coordinator's public corpus: its sources are that corpus's).
  public var role: String
  public var tokensPerLanguage: [String: Int]
  public var declarations: [SignedDeclaration]
  public init(name: String, fingerprint: String, role: String, tokensPerLanguage: [String: Int], declarations: [SignedDeclaration]) {
    self.name = name; self.fingerprint = fingerprint; self.role = role; self.tokensPerLanguage = tokensPerLanguage; self.declarations = declarations
  }
  var tokens: Int { tokensPerLanguage.values.reduce(0, +) }
}

/// What a version was made of, for its summary.
public struct SummaryInput: Sendable {
  public var federation: String
  public var version: Int
  public var hash: String
  public var provider: Provider
  /// The checkpoint the federation started from (a pilot model, or the base of a fine-tuning federation).
  public var base: Dependency?
  public var contributors: [SummaryContributor]
  /// Tokens of the coordinator's public corpus in the lineage (the warm start of version 0); donors' come
  /// with their contributions.
  public var warmStartTokens: Int
  /// The coordinator's declaration of its public corpus, if it made one.
  public var publicCorpus: SignedDeclaration?
  /// The coordinator's fingerprint (the public corpus's declarant).
  public var coordinator: String
  /// The day of a release export (YYYY-MM-DD): what `placed_on_market = "on release"` means; nil otherwise.
  public var releaseDay: String? = nil
  public init(federation: String, version: Int, hash: String, provider: Provider, base: Dependency?, contributors: [SummaryContributor], warmStartTokens: Int,
              publicCorpus: SignedDeclaration?, coordinator: String) {
    self.federation = federation; self.version = version; self.hash = hash; self.provider = provider; self.base = base; self.contributors = contributors
    self.warmStartTokens = warmStartTokens; self.publicCorpus = publicCorpus; self.coordinator = coordinator
  }

  public struct Dependency: Codable, Sendable, Equatable {
    public var name: String
    public var hash: String
    public var license: String?
    public var relation: String
    public init(name: String, hash: String, license: String?, relation: String) { self.name = name; self.hash = hash; self.license = license; self.relation = relation }
  }
}

/// The public summary of training content of one version in the EU AI Office's template (24 July 2025), compiled
/// from the signed declarations of exactly the contributors in its lineage (never from their data). Its JSON
/// keeps the template's section numbers as keys; `Protocol/training-content-summary.schema.json` describes it.
public struct TrainingContentSummary: Sendable {
  public struct Entry: Codable, Sendable, Equatable {
    public var name: String
    public var confidential: Bool
    public var description: String?
    public var url: String?
    public var license: String?
    public var modality: String
    public var contentTypes: [String]
    public var languages: [String]
    public var collectionStart: String?
    public var collectionEnd: String?
    public var crawler: String?
    public var crawlerBehaviour: String?
    public var domains: [String]
    public var generator: String?
    public var declaredBy: [String]
  }
  public struct Measure: Codable, Sendable {
    public var source: String
    public var declaredBy: [String]
    public var measures: String
  }
  public struct ProviderSection: Codable, Sendable {
    public var title = "Provider identification"
    public var providerName: String
    public var contact: String
    public var authorisedRepresentative: String
  }
  public struct ModelSection: Codable, Sendable {
    public var title = "Model identification"
    public var modelName: String
    public var versionedName: String
    public var versionHash: String
    public var dependencies: [SummaryInput.Dependency]
    public var dependenciesStatement: String
    public var placedOnMarket: String
    public var license: String
  }
  public struct Modality: Codable, Sendable {
    public var modality: String
    public var sizeRange: String
    public var tokens: Int
    public var contentTypes: [String]
  }
  public struct Language: Codable, Sendable {
    public var language: String
    public var tokens: Int
  }
  public struct DataSection: Codable, Sendable {
    public var title = "Modalities, overall training data size and other characteristics"
    public var modalities: [Modality]
    public var latestCollectionDate: String
    public var languages: [Language]
    public var continuousTraining: String
    public var other: String
  }
  public struct SourcesSection: Codable, Sendable {
    public var title: String
    public var used: Bool
    public var sources: [Entry]
    public var statement: String
  }
  public struct MeasuresSection: Codable, Sendable {
    public var title: String
    public var measures: [Measure]
    public var statement: String
  }
  public struct DeclarationReference: Codable, Sendable {
    public var contributor: String
    public var fingerprint: String
    public var role: String
    public var hash: String
    public var signature: String
    public var recorded: String
  }
  public struct OtherSection: Codable, Sendable {
    public var title = "Other information"
    public var personalData: [Measure]
    public var federatedTraining: String
    public var declarations: [DeclarationReference]
  }
  public struct About: Codable, Sendable {
    public var template = "Template for the Public Summary of Training Content for general-purpose AI models, EU AI Office, 24 July 2025 (Art. 53(1)(d) AI Act)"
    public var federation: String
    public var version: Int
    public var hash: String
    public var contributors: [String]
  }

  public var about: About
  public var s11: ProviderSection
  public var s12: ModelSection
  public var s13: DataSection
  public var s21: SourcesSection
  public var s221: SourcesSection
  public var s222: SourcesSection
  public var s23: SourcesSection
  public var s24: SourcesSection
  public var s25: SourcesSection
  public var s26: SourcesSection
  public var s31: MeasuresSection
  public var s32: MeasuresSection
  public var s33: OtherSection

  enum CodingKeys: String, CodingKey {
    case about = "agora"
    case s11 = "1.1", s12 = "1.2", s13 = "1.3", s21 = "2.1", s221 = "2.2.1", s222 = "2.2.2", s23 = "2.3", s24 = "2.4", s25 = "2.5", s26 = "2.6"
    case s31 = "3.1", s32 = "3.2", s33 = "3.3"
  }

  /// What a release of the version needs and the inputs lack: each contributor (name, fingerprint) and field.
  public var releaseProblems: [String]

  // MARK: - Compiling

  /// The template's ranges of training data size for text.
  public static func sizeRange(tokens: Int) -> String {
    if tokens < 1_000_000_000 { return "Less than 1 billion tokens" }
    if tokens <= 10_000_000_000_000 { return "1 billion to 10 trillion tokens" }
    return "More than 10 trillion tokens"
  }

  static let notStated = "not stated"

  public static func compile(_ input: SummaryInput) -> TrainingContentSummary {
    var problems = input.provider.missing
    // Every source a contributor's effective declarations name, with who declared it and what it trained.
    struct Use { var source: DeclaredSource; var by: String; var trained: Set<String> }
    var uses: [Use] = []
    var refs: [DeclarationReference] = []
    let publicTokens = input.warmStartTokens + input.contributors.filter { $0.role == "donor" }.reduce(0) { $0 + $1.tokens }
    let publicLanguages = Set(input.contributors.filter { $0.role == "donor" }.flatMap { $0.tokensPerLanguage.keys })
    func refer(_ d: SignedDeclaration, _ who: String, _ fp: String, _ role: String) {
      refs.append(DeclarationReference(contributor: who, fingerprint: fp, role: role, hash: d.hash, signature: d.signature, recorded: isoTime(d.recordedAt)))
    }
    for c in input.contributors.sorted(by: { $0.tokens > $1.tokens || ($0.tokens == $1.tokens && $0.name < $1.name) }) where c.role != "donor" {
      let who = "\(c.name) (\(c.fingerprint.prefix(16)))"
      let trained = Set(c.tokensPerLanguage.keys)
      if c.declarations.isEmpty { problems.append("contributor \(who): no declaration of its training data (node.declaration in its configuration)") }
      for d in c.declarations {
        refer(d, c.name, c.fingerprint, c.role)
        problems += d.declaration.missing(trained: Array(trained)).map { "contributor \(who), declaration \(d.hash.prefix(12)): \($0)" }
        // A source of a language the contributor did not train in these rounds did not go into this version (a node
        // that did not say its languages keeps every source it declared).
        let known = !trained.isEmpty && !trained.contains("unknown")
        for s in d.declaration.sources where !known || !trained.isDisjoint(with: s.languages) {
          uses.append(Use(source: s, by: c.name, trained: known ? trained.intersection(s.languages) : Set(s.languages)))
        }
      }
    }
    if publicTokens > 0 {
      if let p = input.publicCorpus {
        refer(p, "the coordinator's public corpus", input.coordinator, "coordinator")
        let all = Set(p.declaration.sources.flatMap(\.languages))
        problems += p.declaration.missing(trained: []).map { "the coordinator's public corpus, declaration \(p.hash.prefix(12)): \($0)" }
        // Version 0's warm start used the whole corpus; donors only the shards of their languages.
        let used = input.warmStartTokens > 0 ? all : publicLanguages
        for s in p.declaration.sources where !used.isDisjoint(with: s.languages) {
          uses.append(Use(source: s, by: "the coordinator's public corpus", trained: used.intersection(s.languages)))
        }
      } else {
        problems.append("the coordinator's public corpus (version 0's warm start or the donors' shards, \(publicTokens) tokens): no declaration ([public] declaration in federation.toml)")
      }
    }
    // One entry per distinct source (a source several contributors declare alike is listed once, with each of them).
    var entries: [SourceCategory: [Entry]] = [:]
    for u in uses {
      let s = u.source
      var e = Entry(name: s.shownName, confidential: s.confidential, description: s.description, url: s.url, license: s.license, modality: s.modality ?? "text",
                    contentTypes: s.contentTypes, languages: u.trained.sorted(), collectionStart: s.collectionStart, collectionEnd: s.collectionEnd,
                    crawler: s.crawler, crawlerBehaviour: s.crawlerBehaviour, domains: s.domains, generator: s.generator, declaredBy: [u.by])
      var list = entries[s.category] ?? []
      if !s.confidential, let i = list.firstIndex(where: { !$0.confidential && $0.name == e.name && $0.url == e.url && $0.license == e.license }) {
        if let d = e.description, !(list[i].description ?? "").contains(d) { list[i].description = list[i].description.map { $0 + " / " + d } ?? d }
        list[i].declaredBy = Array(Set(list[i].declaredBy + [u.by])).sorted()
        list[i].languages = Array(Set(list[i].languages + e.languages)).sorted()
        list[i].contentTypes = Array(Set(list[i].contentTypes + e.contentTypes)).sorted()
        if let a = e.collectionStart, list[i].collectionStart.map({ a < $0 }) ?? true { list[i].collectionStart = a }
        if let b = e.collectionEnd, list[i].collectionEnd.map({ b > $0 }) ?? true { list[i].collectionEnd = b }
      } else {
        e.contentTypes.sort()
        list.append(e)
      }
      entries[s.category] = list
    }
    func section(_ c: SourceCategory, _ title: String, _ none: String) -> SourcesSection {
      let list = (entries[c] ?? []).sorted { ($0.name, $0.description ?? "") < ($1.name, $1.description ?? "") }
      return SourcesSection(title: title, used: !list.isEmpty, sources: list, statement: list.isEmpty ? none : "\(list.count) source\(list.count == 1 ? "" : "s") declared by the contributors (below).")
    }
    func measures(_ title: String, _ key: KeyPath<DeclaredSource, String?>, none: String) -> MeasuresSection {
      var m: [Measure] = []
      for u in uses {
        let text = u.source[keyPath: key] ?? notStated
        if let i = m.firstIndex(where: { $0.source == u.source.shownName && $0.measures == text && !u.source.confidential }) {
          m[i].declaredBy = Array(Set(m[i].declaredBy + [u.by])).sorted()
        } else {
          m.append(Measure(source: u.source.shownName, declaredBy: [u.by], measures: text))
        }
      }
      return MeasuresSection(title: title, measures: m, statement: m.isEmpty ? none : "As each contributor declared for its sources (below).")
    }
    // Sizes and languages from the tokens each contributor trained (and the public corpus's).
    var perLanguage: [String: Int] = [:]
    for c in input.contributors { for (l, t) in c.tokensPerLanguage { perLanguage[l, default: 0] += t } }
    let total = perLanguage.values.reduce(0, +) + input.warmStartTokens
    let modalities = Set(uses.map { $0.source.modality ?? "text" }).union(["text"]).sorted()
    let mods = modalities.map { m in
      Modality(modality: m, sizeRange: sizeRange(tokens: m == "text" ? total : 0), tokens: m == "text" ? total : 0,
               contentTypes: Array(Set(uses.filter { ($0.source.modality ?? "text") == m }.flatMap(\.source.contentTypes))).sorted())
    }
    let latest = uses.compactMap(\.source.collectionEnd).max()
    let name = input.provider.modelName ?? input.federation
    let deps = input.base.map { [$0] } ?? []
    let summary = TrainingContentSummary(
      about: About(federation: input.federation, version: input.version, hash: input.hash,
                   contributors: input.contributors.map(\.name).sorted()),
      s11: ProviderSection(providerName: input.provider.name ?? notStated, contact: input.provider.contact ?? notStated,
                           authorisedRepresentative: input.provider.representative ?? "None: the provider has no authorised representative."),
      s12: ModelSection(modelName: name, versionedName: "\(name) version \(input.version)", versionHash: input.hash, dependencies: deps,
                        dependenciesStatement: deps.isEmpty ? "The model is not a modification or fine-tuning of another model: version 0 was initialised by the federation."
                                                            : "The training content of the model it depends on is summarised by that model's provider; this summary covers what this federation trained on.",
                        placedOnMarket: input.provider.placedOnMarket == Provider.onRelease
                          ? (input.releaseDay ?? "on release (the day of agora export --release)") : (input.provider.placedOnMarket ?? notStated), license: input.provider.license ?? notStated),
      s13: DataSection(modalities: mods, latestCollectionDate: latest ?? notStated,
                       languages: perLanguage.keys.sorted().map { Language(language: $0, tokens: perLanguage[$0]!) },
                       continuousTraining: "The federation trains in rounds; each version is summarised for the rounds of its own lineage, and a later version has a summary of its own.",
                       other: "Token counts are those the contributors trained on (repetitions included), reported with each signed update."),
      s21: section(.publicDataset, "Publicly available datasets", "No publicly available dataset was used to train this version."),
      s221: section(.commerciallyLicensed, "Datasets commercially licensed by rightsholders or their representatives", "No commercially licensed dataset was used to train this version."),
      s222: section(.privateThirdParty, "Private datasets obtained from other third parties", "No private dataset obtained from a third party was used to train this version."),
      s23: section(.crawled, "Data crawled and scraped from online sources", "No data crawled or scraped from online sources was used to train this version."),
      s24: section(.userData, "User data", "No user data was used to train this version."),
      s25: section(.synthetic, "Synthetic data", "No synthetic data was used to train this version."),
      s26: section(.other, "Other sources of data", "No other source of data was used to train this version."),
      s31: measures("Respect of reservation of rights from the text and data mining exception or limitation", \.tdmOptOuts,
                    none: "No source was declared, so no measure applies."),
      s32: measures("Removal of illegal content", \.illegalContent, none: "No source was declared, so no measure applies."),
      s33: OtherSection(personalData: measures("", \.personalData, none: "").measures,
                        federatedTraining: "Trained by federated learning with Agora: each contributor trained on its own data and sent only signed, sealed model updates; no contributor's data left it. "
                          + "This summary is compiled from the declarations each contributor signed, never from its data.",
                        declarations: refs),
      releaseProblems: problems)
    return summary
  }

  /// The model's licence as `[provider]` gives it (nil when not stated).
  public var licenseOfModel: String? { s12.license == TrainingContentSummary.notStated ? nil : s12.license }

  /// "12 sources (2.1: 3, 2.2.2: 1, …) from 5 signed declarations", or that none were declared.
  public var sourceLine: String {
    let parts = [("2.1", s21), ("2.2.1", s221), ("2.2.2", s222), ("2.3", s23), ("2.4", s24), ("2.5", s25), ("2.6", s26)].filter { !$0.1.sources.isEmpty }
    let n = parts.reduce(0) { $0 + $1.1.sources.count }
    guard n > 0 else { return "no source was declared" }
    return "\(n) source\(n == 1 ? "" : "s") (" + parts.map { "\($0.0): \($0.1.sources.count)" }.joined(separator: ", ")
      + ") from \(s33.declarations.count) signed declaration\(s33.declarations.count == 1 ? "" : "s")"
  }

  /// A Hugging Face model card's `license` value for an SPDX id: the Hub's own identifier where it has one, else
  /// "other" with the SPDX expression as `license_name`.
  public static func huggingFaceLicense(_ spdx: String) -> (license: String, name: String?) {
    let hub: Set<String> = ["apache-2.0", "mit", "gpl-2.0", "gpl-3.0", "lgpl-2.1", "lgpl-3.0", "agpl-3.0", "bsd-2-clause", "bsd-3-clause", "cc0-1.0",
                            "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nd-4.0", "mpl-2.0", "eupl-1.1", "eupl-1.2", "unlicense", "openrail"]
    var id = spdx.lowercased()
    for suffix in ["-or-later", "-only", "+"] where id.hasSuffix(suffix) { id = String(id.dropLast(suffix.count)) }
    return hub.contains(id) ? (id, nil) : ("other", spdx)
  }

  static func isoTime(_ t: Double) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    return f.string(from: Date(timeIntervalSince1970: t))
  }

  // MARK: - Output

  public func json() throws -> Data {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    e.keyEncodingStrategy = .convertToSnakeCase
    return try e.encode(Printed(self))
  }

  /// The JSON without `releaseProblems` (what is published); the CLI prints the problems.
  struct Printed: Encodable {
    let s: TrainingContentSummary
    init(_ s: TrainingContentSummary) { self.s = s }
    func encode(to encoder: Encoder) throws {
      var c = encoder.container(keyedBy: TrainingContentSummary.CodingKeys.self)
      try c.encode(s.about, forKey: .about)
      try c.encode(s.s11, forKey: .s11); try c.encode(s.s12, forKey: .s12); try c.encode(s.s13, forKey: .s13)
      try c.encode(s.s21, forKey: .s21); try c.encode(s.s221, forKey: .s221); try c.encode(s.s222, forKey: .s222); try c.encode(s.s23, forKey: .s23)
      try c.encode(s.s24, forKey: .s24); try c.encode(s.s25, forKey: .s25); try c.encode(s.s26, forKey: .s26)
      try c.encode(s.s31, forKey: .s31); try c.encode(s.s32, forKey: .s32); try c.encode(s.s33, forKey: .s33)
    }
  }

  /// Markdown: the template's three parts in order, every section present (one with nothing to declare says so).
  public var markdown: String {
    func c(_ s: String) -> String { MarkdownCell.escape(s) }
    var o: [String] = []
    o.append("# Public summary of training content: \(c(s12.versionedName))")
    o.append("")
    o.append("In the EU AI Office's template (24 July 2025) for Art. 53(1)(d) of the AI Act. Federation \(c(about.federation)), version \(about.version), hash `\(about.hash)`.")
    o.append("")
    o.append("## 1. General information")
    o.append("")
    o.append("### 1.1 Provider identification")
    o.append("")
    o.append("- Provider: \(c(s11.providerName))")
    o.append("- Contact: \(c(s11.contact))")
    o.append("- Authorised representative: \(c(s11.authorisedRepresentative))")
    o.append("")
    o.append("### 1.2 Model identification")
    o.append("")
    o.append("- Model: \(c(s12.versionedName)) (hash `\(s12.versionHash)`)")
    o.append("- Dependencies: " + (s12.dependencies.isEmpty ? c(s12.dependenciesStatement)
                                   : s12.dependencies.map { "\(c($0.name)) (`\($0.hash)`, \($0.relation)\($0.license.map { ", licence \(c($0))" } ?? ""))" }.joined(separator: "; ") + ". " + c(s12.dependenciesStatement)))
    o.append("- Placed on the market: \(c(s12.placedOnMarket))")
    o.append("")
    o.append("### 1.3 Modalities, overall training data size and other characteristics")
    o.append("")
    for m in s13.modalities {
      o.append("- \(c(m.modality)): \(m.sizeRange) (\(m.tokens) tokens trained); content: \(m.contentTypes.isEmpty ? "not stated" : m.contentTypes.map(c).joined(separator: ", "))")
    }
    o.append("- Latest date of data collection: \(c(s13.latestCollectionDate))")
    o.append("- Languages (tokens trained): " + (s13.languages.isEmpty ? "none" : s13.languages.map { "\(c($0.language)) (\($0.tokens))" }.joined(separator: ", ")))
    o.append("- Continuous training: \(c(s13.continuousTraining))")
    o.append("- Other: \(c(s13.other))")
    o.append("")
    o.append("## 2. List of data sources")
    for (n, s) in [("2.1", s21), ("2.2.1", s221), ("2.2.2", s222), ("2.3", s23), ("2.4", s24), ("2.5", s25), ("2.6", s26)] {
      o.append("")
      o.append("### \(n) \(s.title)")
      o.append("")
      o.append("Used: \(s.used ? "yes" : "no"). \(c(s.statement))")
      guard s.used else { continue }
      o.append("")
      o.append("| source | licence | languages | content | collected | declared by |")
      o.append("| --- | --- | --- | --- | --- | --- |")
      for e in s.sources {
        var what = c(e.name) + (e.url.map { " (\(c($0)))" } ?? "") + (e.description.map { ": " + c($0) } ?? "")
        if let cr = e.crawler { what += "; crawler \(c(cr))" + (e.crawlerBehaviour.map { " (\(c($0)))" } ?? "") }
        if !e.domains.isEmpty { what += "; domains: " + e.domains.map(c).joined(separator: ", ") }
        if let g = e.generator { what += "; generated by \(c(g))" }
        let when = [e.collectionStart, e.collectionEnd].compactMap { $0 }.joined(separator: " to ")
        o.append("| \(what) | \(c(e.license ?? "—")) | \(e.languages.joined(separator: ", ")) | \(c(e.modality))\(e.contentTypes.isEmpty ? "" : ": " + e.contentTypes.map(c).joined(separator: ", ")) | \(when.isEmpty ? "—" : when) | \(e.declaredBy.map(c).joined(separator: ", ")) |")
      }
    }
    o.append("")
    o.append("## 3. Data processing aspects")
    for (n, s) in [("3.1", s31), ("3.2", s32)] {
      o.append("")
      o.append("### \(n) \(s.title)")
      o.append("")
      if s.measures.isEmpty { o.append(c(s.statement)); continue }
      for m in s.measures { o.append("- \(c(m.source)) (declared by \(m.declaredBy.map(c).joined(separator: ", "))): \(c(m.measures))") }
    }
    o.append("")
    o.append("### 3.3 Other information")
    o.append("")
    o.append(c(s33.federatedTraining))
    o.append("")
    o.append("Personal data:" + (s33.personalData.isEmpty ? " no source was declared." : ""))
    for m in s33.personalData { o.append("- \(c(m.source)) (declared by \(m.declaredBy.map(c).joined(separator: ", "))): \(c(m.measures))") }
    o.append("")
    o.append("The signed declarations this summary is compiled from:")
    o.append("")
    o.append("| contributor | role | declaration (BLAKE2b-256) | recorded |")
    o.append("| --- | --- | --- | --- |")
    for d in s33.declarations { o.append("| \(c(d.contributor)) | \(d.role) | `\(d.hash)` | \(d.recorded) |") }
    if s33.declarations.isEmpty { o.append("| (none) | | | |") }
    return o.joined(separator: "\n") + "\n"
  }
}
