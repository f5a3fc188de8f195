import AgoraModel
import Foundation

/// A language's text as the tokenizer tools read it: at most `maxBytes` octets of a file, cut after the last
/// newline so no character is split.
public enum LanguageText {
  public static func read(_ path: String, maxBytes: Int) throws -> String {
    guard let h = FileHandle(forReadingAtPath: path) else { throw DataError.unreadable(path, "cannot open") }
    defer { try? h.close() }
    let d = h.readData(ofLength: maxBytes)
    let cut = d.count < maxBytes ? d : (d.lastIndex(of: 0x0A).map { d.prefix(upTo: $0 + 1) } ?? d)
    return String(decoding: cut, as: UTF8.self)
  }
}

/// Count tables on disk (`<language>.agvc`, `PreTokenCounts.encoded()`), and their sum per language.
public enum VocabularyTables {
  /// The tables in `paths` (files, or directories whose `.agvc` files are read in name order).
  public static func load(_ paths: [String]) throws -> [PreTokenCounts] {
    let fm = FileManager.default
    var files: [String] = []
    for p in paths {
      var isDir: ObjCBool = false
      guard fm.fileExists(atPath: p, isDirectory: &isDir) else { throw DataError.missingSource("\(p): no such file or directory") }
      if isDir.boolValue {
        files += ((try? fm.contentsOfDirectory(atPath: p)) ?? []).filter { $0.hasSuffix(".agvc") }.sorted().map { p + "/" + $0 }
      } else {
        files.append(p)
      }
    }
    return try files.map { f in
      guard let d = fm.contents(atPath: f) else { throw DataError.unreadable(f, "cannot read") }
      do { return try PreTokenCounts(decoding: [UInt8](d)) } catch { throw DataError.unreadable(f, "\(error)") }
    }
  }

  /// One table per language, the sum of its tables, in language-name order.
  public static func merge(_ tables: [PreTokenCounts]) throws -> [PreTokenCounts] {
    var by: [String: PreTokenCounts] = [:]
    for t in tables {
      if by[t.language] == nil { by[t.language] = t } else { try by[t.language]!.merge(t) }
    }
    return by.keys.sorted().map { by[$0]! }
  }
}
