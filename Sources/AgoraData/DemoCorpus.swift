import AgoraWire
import CZlib
import Foundation

/// Builds the embedded default corpus of the demo from two Debian sources, 14 EU languages:
/// - the translated manual pages (`manpages-cs`, `-da`, `-de`, …): each page's roff source is decompressed and
///   reduced to plain paragraphs by `Roff`;
/// - the Debian installation guide (`installation-guide-amd64`), in the 11 of them it is translated into (not
///   fi, hu, pl): each HTML page reduced to paragraphs by `HTMLText`, without the paragraphs a translation left
///   in English. It gives the languages with few manual pages prose of their own (Greek has five pages,
///   13.6 KB).
/// Each is written as `<out>/<lang>/{train,valid}.txt`, one paragraph per line, pages separated by an empty line,
/// the manual pages first. Each source's pages taken in the order of a hash of their file name go to `valid.txt`
/// until it holds 5% of that source's bytes, so the split is stable and never empty. With `publicOut`, the next
/// 10% go to `<publicOut>/<lang>/train.txt`: the federation's public corpus, which compute donors train on and
/// which no institution holds; the 2.5% after them to `<publicOut>/<lang>/valid.txt`, the public validation text
/// the coordinator scores versions on (the institutions score their own). `<out>/SOURCES` names the sources.
public enum DemoCorpus {
  /// Language code → Debian package of its manual pages.
  public static let packages: [(lang: String, package: String)] = [
    ("cs", "manpages-cs"), ("da", "manpages-da"), ("de", "manpages-de"), ("el", "manpages-el"),
    ("es", "manpages-es"), ("fi", "manpages-fi"), ("fr", "manpages-fr"), ("hu", "manpages-hu"),
    ("it", "manpages-it"), ("nl", "manpages-nl"), ("pl", "manpages-pl"), ("pt", "manpages-pt-br"),
    ("ro", "manpages-ro"), ("sv", "manpages-sv"),
  ]
  /// The English name of a demo language (for declarations and messages).
  public static func languageName(_ code: String) -> String {
    let names = ["cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "es": "Spanish", "fi": "Finnish", "fr": "French", "hu": "Hungarian",
                 "it": "Italian", "nl": "Dutch", "pl": "Polish", "pt": "Brazilian Portuguese", "ro": "Romanian", "sv": "Swedish"]
    return names[code] ?? code
  }
  /// The installation guide's package; its HTML is in `/usr/share/doc/<package>/<lang>/`.
  public static let guidePackage = "installation-guide-amd64"
  /// What `<out>/SOURCES` starts with: a corpus built by an older builder lacks it, and `scripts/setup` rebuilds it.
  public static let sourcesLine = "agora demo corpus 2: Debian manual pages (manpages-*) and installation guide (installation-guide-amd64)"

  public struct Summary: Sendable {
    public var lang: String
    /// Manual pages used, and installation-guide pages used.
    public var pages: Int
    public var guidePages: Int
    public var trainBytes: Int
    public var validBytes: Int
    public var publicBytes: Int
  }

  /// One source's pages (hash of the file name, text) split as the type's comment says.
  static func split(_ pages: [(UInt64, String)], withPublic: Bool) -> (train: String, valid: String, pub: String, pubValid: String) {
    let total = pages.reduce(0) { $0 + $1.1.utf8.count }
    var train = "", valid = "", pub = "", pubValid = ""
    for (_, text) in pages.sorted(by: { $0.0 < $1.0 }) {
      if valid.isEmpty || valid.utf8.count < total / 20 { valid += text + "\n\n" }
      else if withPublic, pub.utf8.count < total / 10 { pub += text + "\n\n" }
      else if withPublic, pubValid.isEmpty || pubValid.utf8.count < total / 40 { pubValid += text + "\n\n" }
      else { train += text + "\n\n" }
    }
    return (train, valid, pub, pubValid)
  }

  /// Builds the corpus; returns one summary per language. Throws `DataError` when a package is missing.
  public static func build(out: String, publicOut: String? = nil, languages: [String]? = nil) throws -> [Summary] {
    var result: [Summary] = []
    let guideFiles = try packageFiles(guidePackage).filter { $0.hasSuffix(".html") }
    for (lang, pkg) in packages where languages?.contains(lang) ?? true {
      let files = try packageFiles(pkg).filter { $0.hasSuffix(".gz") && $0.contains("/man/") }.sorted()
      guard !files.isEmpty else { throw DataError.missingSource("\(pkg) lists no manual pages; run scripts/setup") }
      var manPages: [(UInt64, String)] = []
      for f in files {
        guard let src = try? gunzip(f) else { continue }
        let text = Roff.paragraphs(String(decoding: src, as: UTF8.self)).joined(separator: "\n")
        guard text.utf8.count >= 200 else { continue }
        manPages.append((fnv1a((f as NSString).lastPathComponent), text))
      }
      var guidePages: [(UInt64, String)] = []
      for f in guideFiles.sorted() where f.contains("/\(guidePackage)/\(lang)/") {
        guard let data = FileManager.default.contents(atPath: f) else { continue }
        let text = HTMLText.paragraphs(String(decoding: data, as: UTF8.self)).filter { !HTMLText.untranslated($0) }.joined(separator: "\n")
        guard text.utf8.count >= 200 else { continue }
        guidePages.append((fnv1a("guide/" + (f as NSString).lastPathComponent), text))
      }
      let parts = [split(manPages, withPublic: publicOut != nil), split(guidePages, withPublic: publicOut != nil)]
      let train = parts.map(\.train).joined(), valid = parts.map(\.valid).joined()
      let pub = parts.map(\.pub).joined(), pubValid = parts.map(\.pubValid).joined()
      if let publicOut {
        let pdir = (publicOut as NSString).appendingPathComponent(lang)
        try FileManager.default.createDirectory(atPath: pdir, withIntermediateDirectories: true)
        try Data(pub.utf8).write(to: URL(fileURLWithPath: (pdir as NSString).appendingPathComponent("train.txt")), options: .atomic)
        try Data(pubValid.utf8).write(to: URL(fileURLWithPath: (pdir as NSString).appendingPathComponent("valid.txt")), options: .atomic)
      }
      let dir = (out as NSString).appendingPathComponent(lang)
      try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
      try Data(train.utf8).write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("train.txt")), options: .atomic)
      try Data(valid.utf8).write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("valid.txt")), options: .atomic)
      result.append(Summary(lang: lang, pages: manPages.count, guidePages: guidePages.count, trainBytes: train.utf8.count,
                            validBytes: valid.utf8.count, publicBytes: pub.utf8.count))
    }
    try Data((sourcesLine + "\n").utf8).write(to: URL(fileURLWithPath: (out as NSString).appendingPathComponent("SOURCES")), options: .atomic)
    return result
  }

  /// Files installed by a Debian package (`dpkg-query -L`).
  static func packageFiles(_ pkg: String) throws -> [String] {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/dpkg-query")
    p.arguments = ["-L", pkg]
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    do { try p.run() } catch { throw DataError.missingSource("cannot run dpkg-query: \(error)") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw DataError.missingSource("Debian package \(pkg) is not installed; run scripts/setup") }
    return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
  }

  /// Decompresses a gzip file with zlib.
  public static func gunzip(_ path: String) throws -> [UInt8] {
    guard let f = gzopen(path, "rb") else { throw DataError.unreadable(path, "gzopen failed") }
    defer { gzclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
      let n = buf.withUnsafeMutableBytes { gzread(f, $0.baseAddress, UInt32($0.count)) }
      if n < 0 { throw DataError.unreadable(path, "corrupt gzip data") }
      if n == 0 { break }
      out.append(contentsOf: buf[0..<Int(n)])
    }
    return out
  }
}

/// 64-bit FNV-1a of a string's UTF-8 bytes (stable across runs and platforms).
public func fnv1a(_ s: String) -> UInt64 { fnv1a(Array(s.utf8)) }

public func fnv1a<C: Collection>(_ bytes: C) -> UInt64 where C.Element == UInt8 {
  var h: UInt64 = 0xcbf2_9ce4_8422_2325
  for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
  return h
}

/// Errors of the data library.
public enum DataError: Error, CustomStringConvertible, Equatable {
  case missingSource(String)
  case unreadable(String, String)
  case corruptCache(String, String)
  case empty(String)
  /// A language directory whose name is not a language name (1 to 32 of a-z, 0-9, '-', '_').
  case badLanguageName(directory: String)

  public var description: String {
    switch self {
    case .badLanguageName(let d):
      return "\(Printable.line(d)): a language directory's name must be 1 to 32 of a-z, 0-9, '-' and '_' (a lowercase language tag such as pt-br): rename it"
    case .missingSource(let s): return "missing data source: \(s)"
    case .unreadable(let p, let why): return "\(p): \(why)"
    case .corruptCache(let p, let why): return "\(p): token cache is invalid (\(why)); delete it to rebuild"
    case .empty(let s): return "no data: \(s)"
    }
  }
}
