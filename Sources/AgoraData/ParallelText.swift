import AgoraModel
import Foundation

/// Sentence-aligned parallel text for measuring a tokenizer's fairness (tokens each language needs for the
/// same content). Source: gettext message catalogues (`.mo`), which Debian ships in `/usr/share/locale/<locale>/
/// LC_MESSAGES/` for the programs installed: each maps an English message to its translation, so the messages
/// translated into every language of a set are parallel text.
public enum ParallelText {
  /// The (message, translation) pairs of one `.mo` file: neither the header (empty message), messages with a
  /// context or a plural, nor empty translations. A file that is not a catalogue is an error.
  public static func catalogue(_ data: [UInt8], path: String = "catalogue") throws -> [(String, String)] {
    func bad(_ why: String) -> DataError { .unreadable(path, "not a gettext catalogue: \(why)") }
    guard data.count >= 28 else { throw bad("\(data.count) octets") }
    func u32(_ o: Int, _ little: Bool) throws -> Int {
      guard o >= 0, o + 4 <= data.count else { throw bad("an offset beyond the file") }
      let v = UInt32(data[o]) | UInt32(data[o + 1]) << 8 | UInt32(data[o + 2]) << 16 | UInt32(data[o + 3]) << 24
      return Int(little ? v : v.byteSwapped)
    }
    let little: Bool
    switch try u32(0, true) {
    case 0x9504_12DE: little = true
    case 0xDE12_0495: little = false
    default: throw bad("no magic number")
    }
    let n = try u32(8, little), originals = try u32(12, little), translations = try u32(16, little)
    guard n <= 1 << 20 else { throw bad("\(n) messages") }
    func string(_ table: Int, _ i: Int) throws -> [UInt8] {
      let len = try u32(table + 8 * i, little), off = try u32(table + 8 * i + 4, little)
      guard off >= 0, len >= 0, off + len <= data.count else { throw bad("a string beyond the file") }
      return Array(data[off..<(off + len)])
    }
    var out: [(String, String)] = []
    for i in 0..<n {
      let id = try string(originals, i), tr = try string(translations, i)
      guard !id.isEmpty, !tr.isEmpty, !id.contains(0), !id.contains(0x04), !tr.contains(0) else { continue }
      guard let a = String(validating: id, as: UTF8.self), let b = String(validating: tr, as: UTF8.self) else { continue }
      out.append((a, b))
    }
    return out
  }

  /// The locale directory's name for a language directory's (`pt-br` → `pt_BR`; `pt` → `pt_BR` when there is no
  /// `pt` but a `pt_BR`).
  static func locale(for language: String, in root: String) -> String? {
    let fm = FileManager.default
    let parts = language.split(whereSeparator: { $0 == "-" || $0 == "_" })
    var candidates = [language]
    if parts.count == 2 { candidates.append("\(parts[0].lowercased())_\(parts[1].uppercased())") }
    candidates.append(language.lowercased())
    if language.lowercased() == "pt" { candidates.append("pt_BR") }
    return candidates.first { fm.fileExists(atPath: root + "/" + $0 + "/LC_MESSAGES") }
  }

  /// Messages translated into every language of `languages` (English messages of at least `minLength`
  /// characters, translations that differ from the message), from the catalogues under `root` that every
  /// language has: one aligned list of sentences per language. Languages without catalogues are left out.
  public static func fromMessageCatalogues(root: String = "/usr/share/locale", languages: [String], minLength: Int = 20)
    throws -> [String: [String]] {
    let fm = FileManager.default
    var locales: [String: String] = [:]
    for l in languages { if let loc = locale(for: l, in: root) { locales[l] = loc } }
    // Languages with at least half as many catalogues as the best-served one (the others would empty the
    // common set: a locale with a handful of catalogues is left out and reported without a premium).
    var domainsOf: [String: Set<String>] = [:]
    for (l, loc) in locales {
      domainsOf[l] = Set(((try? fm.contentsOfDirectory(atPath: root + "/" + loc + "/LC_MESSAGES")) ?? []).filter { $0.hasSuffix(".mo") })
    }
    let most = domainsOf.values.map(\.count).max() ?? 0
    let langs = languages.filter { (domainsOf[$0]?.count ?? 0) * 2 >= most && most > 0 }
    guard langs.count >= 2 else { return [:] }
    let domains = langs.map { domainsOf[$0]! }
    let common = domains.dropFirst().reduce(domains[0]) { $0.intersection($1) }.sorted()
    var out: [String: [String]] = Dictionary(uniqueKeysWithValues: langs.map { ($0, [String]()) })
    for d in common {
      var maps: [[String: String]] = []
      for l in langs {
        let path = root + "/" + locales[l]! + "/LC_MESSAGES/" + d
        guard let data = fm.contents(atPath: path) else { throw DataError.unreadable(path, "cannot read") }
        var m: [String: String] = [:]
        for (a, b) in try catalogue([UInt8](data), path: path) where a != b { m[a] = b }
        maps.append(m)
      }
      for id in maps[0].keys.sorted() where id.count >= minLength && maps.allSatisfy({ $0[id] != nil }) {
        for (k, l) in langs.enumerated() { out[l]!.append(maps[k][id]!) }
      }
    }
    // A language whose catalogues translate none of the common messages (untranslated, as English is) has none.
    return out.filter { !$0.value.isEmpty }
  }
}

/// How fairly a tokenizer serves languages: tokens per octet and per character on each language's text, and,
/// on parallel text, each language's premium — its tokens for the same sentences over the median language's.
public struct TokenizerFairness: Sendable {
  public struct Language: Sendable {
    public var name: String
    public var tokensPerByte: Double
    public var tokensPerCharacter: Double
    /// Tokens on the parallel sentences / the median language's (nil without parallel text).
    public var premium: Double?
  }

  public var languages: [Language]
  public var parallelSentences: Int
  /// Each language's premium on the parallel text (also those not among `texts`).
  public var premiums: [String: Double]

  /// `texts`: each language's text to measure on; `parallel`: aligned sentences per language (may be empty).
  public init(tokenizer: Tokenizer, texts: [(String, String)], parallel: [String: [String]]) {
    var tokens: [String: Double] = [:]
    for (l, sentences) in parallel {
      var n = 0
      for s in sentences { n += tokenizer.encode(s).count }
      tokens[l] = Double(n)
    }
    let median = tokens.values.sorted().dropFirst(max(0, tokens.count - 1) / 2).first.flatMap { $0 > 0 ? $0 : nil }
    premiums = median.map { m in tokens.mapValues { $0 / m } } ?? [:]
    languages = texts.map { name, text in
      let n = Double(tokenizer.encode(text).count)
      let chars = Double(text.unicodeScalars.count)
      return Language(name: name, tokensPerByte: n / Double(max(1, text.utf8.count)), tokensPerCharacter: n / max(1, chars),
                      premium: tokens[name].flatMap { t in median.map { t / $0 } })
    }
    parallelSentences = parallel.values.first?.count ?? 0
  }

  /// Worst over best premium (nil with fewer than two premiums).
  public var premiumSpread: Double? {
    let p = languages.compactMap(\.premium)
    guard p.count >= 2, let lo = p.min(), let hi = p.max(), lo > 0 else { return nil }
    return hi / lo
  }

  public var meanTokensPerByte: Double { languages.map(\.tokensPerByte).reduce(0, +) / Double(max(1, languages.count)) }
}
