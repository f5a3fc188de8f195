import AgoraText
import Foundation
import TOMLKit

/// Reads a declaration file: TOML with a `declarant` and one `[[source]]` table per source (docs/reference.md,
/// "Declaring training content"). Every key is checked: an unknown one is an error naming the nearest known key,
/// a value of the wrong type names the key, and the result passes `Declaration.check`.
public enum DeclarationFile {
  static let stringKeys = ["category", "name", "url", "description", "license", "modality", "collection_start", "collection_end", "crawler",
                           "crawler_behaviour", "generator", "tdm_opt_outs", "illegal_content", "personal_data"]
  static let listKeys = ["languages", "content_types", "domains"]
  static let boolKeys = ["confidential"]

  public static func load(_ path: String) throws -> Declaration {
    guard let data = FileManager.default.contents(atPath: path) else { throw DeclarationError(file: path, key: "-", problem: "cannot read the file") }
    let table: TOMLTable
    do { table = try TOMLTable(string: String(decoding: data, as: UTF8.self)) } catch {
      throw DeclarationError(file: path, key: "-", problem: "not valid TOML: \(error)")
    }
    return try parse(table, file: path)
  }

  public static func parse(_ table: TOMLTable, file: String) throws -> Declaration {
    func fail(_ key: String, _ problem: String) -> DeclarationError { DeclarationError(file: file, key: key, problem: problem) }
    for k in table.keys where k != "declarant" && k != "source" {
      throw fail(k, "not a key of a declaration file" + (nearest(k, ["declarant", "source"]).map { " (did you mean \($0)?)" } ?? ""))
    }
    guard let declarant = table["declarant"]?.string else { throw fail("declarant", "missing (expected a string: who declares)") }
    guard let list = table["source"]?.array else { throw fail("source", "missing: declare each source in a [[source]] table") }
    var sources: [DeclaredSource] = []
    for i in 0..<list.count {
      guard let t = list[i].table else { throw fail("source[\(i)]", "expected a table ([[source]])") }
      let at = "source[\(i)]."
      for k in t.keys where !(stringKeys + listKeys + boolKeys).contains(k) {
        throw fail(at + k, "not a key of a source" + (nearest(k, stringKeys + listKeys + boolKeys).map { " (did you mean \($0)?)" } ?? ""))
      }
      func str(_ k: String) throws -> String? {
        guard let v = t[k] else { return nil }
        guard let s = v.string else { throw fail(at + k, "expected a string") }
        return s
      }
      func strs(_ k: String) throws -> [String] {
        guard let v = t[k] else { return [] }
        guard let a = v.array else { throw fail(at + k, "expected a list of strings") }
        return try (0..<a.count).map { j in
          guard let s = a[j].string else { throw fail(at + k + "[\(j)]", "expected a string") }
          return s
        }
      }
      guard let c = try str("category") else {
        throw fail(at + "category", "missing (one of \(SourceCategory.allCases.map(\.rawValue).joined(separator: ", ")))")
      }
      guard let category = SourceCategory(rawValue: c) else {
        throw fail(at + "category", "\"\(c)\" is not one of \(SourceCategory.allCases.map(\.rawValue).joined(separator: ", "))")
      }
      var confidential = false
      if let v = t["confidential"] {
        guard let b = v.bool else { throw fail(at + "confidential", "expected true or false") }
        confidential = b
      }
      sources.append(DeclaredSource(languages: try strs("languages"), category: category, name: try str("name"), confidential: confidential, url: try str("url"),
                                    description: try str("description"), license: try str("license"), modality: try str("modality") ?? "text",
                                    contentTypes: try strs("content_types"), collectionStart: try str("collection_start"), collectionEnd: try str("collection_end"),
                                    crawler: try str("crawler"), crawlerBehaviour: try str("crawler_behaviour"), domains: try strs("domains"),
                                    generator: try str("generator"), tdmOptOuts: try str("tdm_opt_outs"), illegalContent: try str("illegal_content"),
                                    personalData: try str("personal_data")))
    }
    let d = Declaration(declarant: declarant, sources: sources)
    try d.check(file: file)
    return d
  }

  /// Writes `d` as a declaration file (what `agora data build-demo` writes for the demo corpus).
  public static func toml(_ d: Declaration, comment: String) -> String {
    let q = jsonString  // a JSON string literal is a TOML basic string
    func list(_ a: [String]) -> String { "[" + a.map(q).joined(separator: ", ") + "]" }
    var s = comment.split(separator: "\n", omittingEmptySubsequences: false).map { "# " + $0 }.joined(separator: "\n") + "\n\ndeclarant = \(q(d.declarant))\n"
    for src in d.sources {
      s += "\n[[source]]\nlanguages = \(list(src.languages))\ncategory = \(q(src.category.rawValue))\n"
      if src.confidential { s += "confidential = true\n" }
      let pairs: [(String, String?)] = [("name", src.name), ("url", src.url), ("description", src.description), ("license", src.license),
                                        ("modality", src.modality), ("collection_start", src.collectionStart), ("collection_end", src.collectionEnd),
                                        ("crawler", src.crawler), ("crawler_behaviour", src.crawlerBehaviour), ("generator", src.generator),
                                        ("tdm_opt_outs", src.tdmOptOuts), ("illegal_content", src.illegalContent), ("personal_data", src.personalData)]
      for (k, v) in pairs { if let v { s += "\(k) = \(q(v))\n" } }
      if !src.contentTypes.isEmpty { s += "content_types = \(list(src.contentTypes))\n" }
      if !src.domains.isEmpty { s += "domains = \(list(src.domains))\n" }
    }
    return s
  }

  static func nearest(_ key: String, _ candidates: [String]) -> String? { NearestName.to(key, among: Set(candidates)) }
}
