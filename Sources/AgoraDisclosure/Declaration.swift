import AgoraCrypto
import AgoraWire
import Foundation
import TOMLKit

/// Why a declaration file (or a DECLARATION's payload) cannot be used: the file (or "DECLARATION from <node>"),
/// the key, and what is wrong with it. Nothing is sent or recorded from a declaration that throws this.
public struct DeclarationError: Error, Equatable, CustomStringConvertible {
  public var file: String
  public var key: String
  public var problem: String
  public init(file: String, key: String, problem: String) { self.file = file; self.key = key; self.problem = problem }
  public var description: String { "\(file): \(key): \(problem)" }
}

/// Where a source's data came from, as the EU AI Office's template for the public summary of training content
/// (24 July 2025) sorts sources: each category is one of its sections 2.1–2.6.
public enum SourceCategory: String, Codable, CaseIterable, Sendable {
  case publicDataset = "public_dataset"
  case commerciallyLicensed = "commercially_licensed"
  case privateThirdParty = "private_third_party"
  case crawled
  case userData = "user_data"
  case synthetic
  case other

  /// The template's section for this category.
  public var section: String {
    switch self {
    case .publicDataset: return "2.1"
    case .commerciallyLicensed: return "2.2.1"
    case .privateThirdParty: return "2.2.2"
    case .crawled: return "2.3"
    case .userData: return "2.4"
    case .synthetic: return "2.5"
    case .other: return "2.6"
    }
  }
}

/// One source of an institution's training data, as it declares it: metadata only, never text.
public struct DeclaredSource: Codable, Equatable, Sendable {
  /// The languages of the node's data this source is in (its data directories' names); a node sends the
  /// sources that cover at least one of its languages.
  public var languages: [String]
  public var category: SourceCategory
  /// The source's name; nil when `confidential` (the summary then shows the category and the description).
  public var name: String?
  /// Declared at category level: the name would itself be confidential.
  public var confidential: Bool
  public var url: String?
  /// What the data is (for a confidential source: a general description without the name).
  public var description: String?
  /// SPDX licence expression (e.g. "GPL-3.0-or-later", or "LicenseRef-…" for a contract).
  public var license: String?
  public var modality: String?
  /// Kinds of content, e.g. "technical documentation", "news", "fiction".
  public var contentTypes: [String]
  /// When collection began and the latest collection date (ISO dates, YYYY-MM or YYYY-MM-DD).
  public var collectionStart: String?
  public var collectionEnd: String?
  /// Crawled data: the crawler (name or user agent), how it behaved, and the most relevant domains.
  public var crawler: String?
  public var crawlerBehaviour: String?
  public var domains: [String]
  /// Synthetic data: the model(s) that generated it.
  public var generator: String?
  /// How text-and-data-mining reservations (Art. 4(3) of Directive (EU) 2019/790) were honoured.
  public var tdmOptOuts: String?
  /// What was done to remove illegal content.
  public var illegalContent: String?
  /// How personal data was handled.
  public var personalData: String?

  public init(languages: [String], category: SourceCategory, name: String? = nil, confidential: Bool = false, url: String? = nil,
              description: String? = nil, license: String? = nil, modality: String? = "text", contentTypes: [String] = [],
              collectionStart: String? = nil, collectionEnd: String? = nil, crawler: String? = nil, crawlerBehaviour: String? = nil,
              domains: [String] = [], generator: String? = nil, tdmOptOuts: String? = nil, illegalContent: String? = nil, personalData: String? = nil) {
    self.languages = languages; self.category = category; self.name = name; self.confidential = confidential; self.url = url
    self.description = description; self.license = license; self.modality = modality; self.contentTypes = contentTypes
    self.collectionStart = collectionStart; self.collectionEnd = collectionEnd; self.crawler = crawler; self.crawlerBehaviour = crawlerBehaviour
    self.domains = domains; self.generator = generator; self.tdmOptOuts = tdmOptOuts; self.illegalContent = illegalContent; self.personalData = personalData
  }

  /// How the summary names it: the name, or the category with "name withheld".
  public var shownName: String { confidential ? "(name withheld: declared at category level)" : (name ?? "(unnamed)") }

  /// What the template needs of this source and it lacks, as "sources[i].key: why" (empty: complete).
  public func missing(at i: Int) -> [String] {
    var out: [String] = []
    func need(_ v: String?, _ key: String, _ why: String = "missing") {
      if (v ?? "").trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { out.append("source[\(i)].\(key): \(why)") }
    }
    if !confidential { need(name, "name", "missing (or set confidential = true and describe the source)") }
    need(description, "description")
    need(modality, "modality")
    if contentTypes.isEmpty { out.append("source[\(i)].content_types: missing") }
    need(collectionEnd, "collection_end", "missing (the latest collection date)")
    need(tdmOptOuts, "tdm_opt_outs", "missing (how text-and-data-mining opt-outs were honoured, or why none apply)")
    need(illegalContent, "illegal_content", "missing (what was done to remove illegal content)")
    need(personalData, "personal_data", "missing (how personal data was handled)")
    switch category {
    case .publicDataset:
      need(url, "url", "missing (a public dataset is named with where to find it)")
      need(license, "license", "missing (SPDX identifier)")
    case .commerciallyLicensed:
      need(license, "license", "missing (SPDX identifier, or LicenseRef-… for the contract)")
    case .crawled:
      need(crawler, "crawler", "missing (the crawler's name or user agent)")
      need(collectionStart, "collection_start", "missing (when crawling began)")
      if domains.isEmpty { out.append("source[\(i)].domains: missing (the most relevant domain names)") }
    case .synthetic:
      need(generator, "generator", "missing (the model that generated the data)")
    case .privateThirdParty, .userData, .other:
      break
    }
    return out
  }
}

/// What an institution declares about its training data (or the coordinator about its public corpus): the
/// sources, each with what the EU AI Office's template asks. It travels in DECLARATION (SPEC §4.5), signed; the
/// coordinator compiles each version's public summary from the declarations of the contributors in its lineage.
public struct Declaration: Codable, Equatable, Sendable {
  public static let formatName = "agora-declaration-1"
  public var format: String
  /// Who declares (informational; the summary names the contributor by its enrolment card).
  public var declarant: String
  public var sources: [DeclaredSource]

  public init(declarant: String, sources: [DeclaredSource]) {
    format = Declaration.formatName
    self.declarant = declarant
    self.sources = sources
  }

  /// The sources that cover at least one of `languages` (what a node with those languages declares).
  public func covering(_ languages: [String]) -> Declaration {
    var d = self
    d.sources = sources.filter { s in s.languages.contains { languages.contains($0) } }
    return d
  }

  /// What the template needs and this declaration lacks for a contributor that trained `languages`: each
  /// source's missing fields, and every language no source covers.
  public func missing(trained languages: [String]) -> [String] {
    var out = sources.enumerated().flatMap { $0.element.missing(at: $0.offset) }
    let covered = Set(sources.flatMap(\.languages))
    for l in languages.sorted() where !covered.contains(l) { out.append("language \(l): no declared source covers it") }
    return out
  }

  // MARK: - Bytes

  /// The declaration as sent: JSON with sorted snake_case keys, no insignificant whitespace.
  public func json() throws -> [UInt8] {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    e.keyEncodingStrategy = .convertToSnakeCase
    return Array(try e.encode(self))
  }

  /// The largest DECLARATION payload a party accepts (the wire's bound, SPEC §4.5).
  public static let maxBytes = Wire.maxDeclaration

  /// A declaration from the octets of a DECLARATION (or a registry row), checked as `check` checks a file.
  public static func parse(_ bytes: [UInt8], source: String) throws -> Declaration {
    guard bytes.count <= maxBytes else { throw DeclarationError(file: source, key: "-", problem: "\(bytes.count) octets, above the \(maxBytes) a declaration may have") }
    let d = JSONDecoder()
    d.keyDecodingStrategy = .convertFromSnakeCase
    let decl: Declaration
    do { decl = try d.decode(Declaration.self, from: Data(bytes)) } catch {
      throw DeclarationError(file: source, key: "-", problem: "not a declaration's JSON (\(DeclarationError.decodingProblem(error)))")
    }
    try decl.check(file: source)
    return decl
  }

  /// The checks every declaration must pass whoever made it: its format, valid language names, dates, licence
  /// expressions and URLs. (What the summary needs for a release is `missing`, not checked here: a node may
  /// train with an incomplete declaration; `agora export --release` names what it lacks.)
  public func check(file: String) throws {
    func fail(_ key: String, _ problem: String) -> DeclarationError { DeclarationError(file: file, key: key, problem: problem) }
    guard format == Declaration.formatName else { throw fail("format", "\"\(format)\" (expected \"\(Declaration.formatName)\")") }
    guard declarant.utf8.count <= 256 else { throw fail("declarant", "longer than 256 octets") }
    guard sources.count <= 256 else { throw fail("source", "\(sources.count) sources (at most 256)") }
    for (i, s) in sources.enumerated() {
      let at = "source[\(i)]"
      guard !s.languages.isEmpty else { throw fail(at + ".languages", "empty: name the languages (data directories) this source covers") }
      for l in s.languages where !Declaration.isLanguageName(l) {
        throw fail(at + ".languages", "\"\(l)\" is not a language name (1 to 32 of a-z, 0-9, - and _)")
      }
      for (k, v) in [("collection_start", s.collectionStart), ("collection_end", s.collectionEnd)] {
        if let v, !Declaration.isDate(v) { throw fail(at + "." + k, "\"\(v)\" is not a date (YYYY-MM-DD or YYYY-MM)") }
      }
      if let a = s.collectionStart, let b = s.collectionEnd, Declaration.isDate(a), Declaration.isDate(b), a > b {
        throw fail(at + ".collection_start", "\(a) is after collection_end \(b)")
      }
      if let l = s.license, !SPDX.isExpression(l) {
        throw fail(at + ".license", "\"\(l)\" is not an SPDX licence expression (e.g. GPL-3.0-or-later, CC-BY-4.0, LicenseRef-contract)")
      }
      if let u = s.url, !(u.hasPrefix("https://") || u.hasPrefix("http://") || u.hasPrefix("file://")) || u.contains(where: { $0.isWhitespace }) {
        throw fail(at + ".url", "\"\(u)\" is not an http(s) URL")
      }
      if s.confidential && s.category == .publicDataset { throw fail(at + ".confidential", "a public dataset cannot be declared without its name") }
      for (k, v) in [("name", s.name), ("description", s.description), ("tdm_opt_outs", s.tdmOptOuts), ("illegal_content", s.illegalContent),
                     ("personal_data", s.personalData), ("crawler_behaviour", s.crawlerBehaviour)] {
        if let v, v.utf8.count > 4096 { throw fail(at + "." + k, "longer than 4,096 octets") }
      }
      if s.confidential, let n = s.name, !n.isEmpty { throw fail(at + ".name", "a confidential source has no name in its declaration (it would reach the public summary's record)") }
    }
  }

  /// Today as YYYY-MM-DD (UTC): a collection or release day.
  public static func today() -> String {
    let f = DateFormatter()
    f.dateFormat = "yyyy-MM-dd"
    f.timeZone = TimeZone(identifier: "UTC")
    f.locale = Locale(identifier: "en_US_POSIX")
    return f.string(from: Date())
  }

  static func isLanguageName(_ s: String) -> Bool {
    !s.isEmpty && s.utf8.count <= 32 && s.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x5f }
  }

  /// YYYY-MM or YYYY-MM-DD with a real month (and day).
  static func isDate(_ s: String) -> Bool {
    let p = s.split(separator: "-", omittingEmptySubsequences: false)
    guard p.count == 2 || p.count == 3, p[0].count == 4, p.dropFirst().allSatisfy({ $0.count == 2 }), p.allSatisfy({ $0.allSatisfy(\.isASCII) && Int($0) != nil }),
          let m = Int(p[1]), (1...12).contains(m) else { return false }
    if p.count == 3 { guard let d = Int(p[2]), (1...31).contains(d) else { return false } }
    return true
  }

  // MARK: - Signature

  /// What a declaration's signature covers: "AGORA-DECLARATION-v1" ‖ u8 length ‖ federation ‖ BLAKE2b-256(payload).
  public static func statement(federation: String, payload: [UInt8]) -> [UInt8] { DeclarationStatement.bytes(federation: federation, payload: payload) }
}

extension DeclarationError {
  static func decodingProblem(_ e: Error) -> String {
    switch e as? DecodingError {
    case .keyNotFound(let k, let c)?: return "missing \((c.codingPath + [k]).map(\.stringValue).joined(separator: "."))"
    case .typeMismatch(_, let c)?, .valueNotFound(_, let c)?: return "\(c.codingPath.map(\.stringValue).joined(separator: ".")): \(c.debugDescription)"
    case .dataCorrupted(let c)?: return "\(c.codingPath.map(\.stringValue).joined(separator: ".")): \(c.debugDescription)"
    default: return "\(e)"
    }
  }
}

/// SPDX licence expressions, checked for their syntax (ids of letters, digits, '.', '-' and '+', joined by AND,
/// OR and WITH, in parentheses): what a summary's reader can look up.
public enum SPDX {
  public static func isExpression(_ s: String) -> Bool {
    var tokens: [String] = []
    var cur = ""
    for ch in s {
      if ch == "(" || ch == ")" { if !cur.isEmpty { tokens.append(cur); cur = "" }; tokens.append(String(ch)) }
      else if ch == " " { if !cur.isEmpty { tokens.append(cur); cur = "" } }
      else { cur.append(ch) }
    }
    if !cur.isEmpty { tokens.append(cur) }
    guard !tokens.isEmpty else { return false }
    var depth = 0, expectId = true
    for t in tokens {
      switch t {
      case "(":
        guard expectId else { return false }
        depth += 1
      case ")":
        guard !expectId, depth > 0 else { return false }
        depth -= 1
      case "AND", "OR", "WITH":
        guard !expectId else { return false }
        expectId = true
      default:
        guard expectId, t.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "+" || $0 == ":") }) else { return false }
        expectId = false
      }
    }
    return depth == 0 && !expectId
  }
}
