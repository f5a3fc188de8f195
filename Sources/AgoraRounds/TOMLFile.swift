import AgoraText
import Foundation
import TOMLKit

/// Reads typed settings from one TOML file; paths are resolved against the file's directory (made absolute, so a
/// bare file name in a config read from its own directory names a file there). It notes every key it is asked
/// for, so that `rejectUnknownKeys` can refuse a key nobody reads (a misspelt one would otherwise run silently
/// with the default).
final class TOMLFile {
  let path: String
  let table: TOMLTable
  private(set) var asked: Set<String> = []
  var dir: String { (path as NSString).deletingLastPathComponent }

  /// `overrides`: settings given as `KEY=VALUE` (VALUE in TOML, e.g. `rounds.secure_aggregation=true`) that
  /// replace the file's.
  init(_ path: String, overrides: [String] = []) throws {
    self.path = path.hasPrefix("/") ? path : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(path)
    guard let d = FileManager.default.contents(atPath: path) else { throw ConfigError(file: path, key: "-", problem: "cannot read the file") }
    var t: TOMLTable
    do { t = try TOMLTable(string: String(decoding: d, as: UTF8.self)) } catch {
      throw ConfigError(file: path, key: "-", problem: "not valid TOML: \(error)")
    }
    for o in overrides {
      guard let eq = o.firstIndex(of: "="), !o[..<eq].isEmpty else { throw ConfigError(file: path, key: o, problem: "an override is KEY=VALUE") }
      let key = o[..<eq].trimmingCharacters(in: .whitespaces)
      guard key.split(separator: ".").allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" } }) else {
        throw ConfigError(file: path, key: key, problem: "not a setting's name")
      }
      let overlay: TOMLTable
      do { overlay = try TOMLTable(string: key + " = " + o[o.index(after: eq)...]) } catch {
        throw ConfigError(file: path, key: key, problem: "the override's value is not valid TOML: \(error)")
      }
      t = TOMLFile.merge(overlay, into: t)
    }
    table = t
  }

  /// `base` with every value of `overlay` put in (tables merged key by key).
  static func merge(_ overlay: TOMLTable, into base: TOMLTable) -> TOMLTable {
    let out = TOMLTable()
    for k in base.keys { out[k] = base[k] }
    for k in overlay.keys {
      if let o = overlay[k]?.table, let b = base[k]?.table { out[k] = merge(o, into: b) } else { out[k] = overlay[k] }
    }
    return out
  }

  func value(_ key: String) -> TOMLValueConvertible? {
    asked.insert(key)
    var t: TOMLTable = table
    let parts = key.split(separator: ".").map(String.init)
    for p in parts.dropLast() {
      guard let sub = t[p]?.table else { return nil }
      t = sub
    }
    return t[parts.last!]
  }

  func fail(_ key: String, _ problem: String) -> ConfigError { ConfigError(file: path, key: key, problem: problem) }

  /// Refuses the first key (in sorted order) of the file, or of its overrides, that no setting read: a typo or a
  /// setting of another file. The error names the file, the key and the nearest key that is read.
  func rejectUnknownKeys() throws {
    func walk(_ t: TOMLTable, _ prefix: String) throws {
      for k in t.keys.sorted() {
        let key = prefix + k
        if asked.contains(key) { continue }
        if let sub = t[k]?.table, asked.contains(where: { $0.hasPrefix(key + ".") }) { try walk(sub, key + "."); continue }
        // Candidates: every key read, and every table that holds one (a misspelt table, `[round]`).
        let tables = Set(asked.flatMap { k in k.split(separator: ".").dropLast().indices.map { k.split(separator: ".")[0...$0].joined(separator: ".") } })
        let near = TOMLFile.nearest(to: key, among: asked.union(tables))
        throw fail(key, "not a setting of this file\(near.map { " (did you mean \($0)?)" } ?? "")")
      }
    }
    try walk(table, "")
  }

  /// The candidate with the smallest edit distance to `key`, if within a third of its length (at least 2).
  static func nearest(to key: String, among candidates: Set<String>) -> String? { NearestName.to(key, among: candidates) }

  /// Throws `fail(problem)` unless `p` exists (a directory with `directory`, else a file).
  static func mustExist(_ p: String, directory: Bool, _ fail: (String) -> ConfigError) throws {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else { throw fail("\(p) does not exist") }
    if directory && !isDir.boolValue { throw fail("\(p) is not a directory") }
    if !directory && isDir.boolValue { throw fail("\(p) is a directory, not a file") }
  }

  /// A table of language → number (e.g. `{ de = 3.11, nl = 3.2 }`), each within `range`; empty when absent.
  func numbersByLanguage(_ key: String, range: ClosedRange<Double>) throws -> [String: Double] {
    guard let v = value(key) else { return [:] }
    guard let t = v.table else { throw fail(key, "expected a table of language = number") }
    var out: [String: Double] = [:]
    for k in t.keys {
      guard let x = t[k]?.double ?? t[k]?.int.map(Double.init), range.contains(x) else { throw fail(key + "." + k, "expected a number in \(range)") }
      out[k] = x
    }
    return out
  }

  func string(_ key: String, default d: String? = nil) throws -> String {
    guard let v = value(key) else { if let d { return d }; throw fail(key, "missing (expected a string)") }
    guard let s = v.string else { throw fail(key, "expected a string") }
    return s
  }

  func int(_ key: String, default d: Int? = nil, range: ClosedRange<Int>) throws -> Int {
    guard let v = value(key) else { if let d { return d }; throw fail(key, "missing (expected an integer in \(range))") }
    guard let i = v.int else { throw fail(key, "expected an integer in \(range)") }
    guard range.contains(i) else { throw fail(key, "\(i) is outside \(range)") }
    return i
  }

  func ints(_ key: String, range: ClosedRange<Int>) throws -> [Int] {
    guard let v = value(key) else { return [] }
    guard let a = v.array else { throw fail(key, "expected a list of integers in \(range)") }
    return try (0..<a.count).map { i in
      guard let x = a[i].int else { throw fail("\(key)[\(i)]", "expected an integer in \(range)") }
      guard range.contains(x) else { throw fail("\(key)[\(i)]", "\(x) is outside \(range)") }
      return x
    }
  }

  func strings(_ key: String) throws -> [String]? {
    guard let v = value(key) else { return nil }
    guard let a = v.array else { throw fail(key, "expected a list of strings") }
    return try (0..<a.count).map { i in
      guard let x = a[i].string else { throw fail("\(key)[\(i)]", "expected a string") }
      return x
    }
  }

  func bool(_ key: String, default d: Bool) throws -> Bool {
    guard let v = value(key) else { return d }
    guard let b = v.bool else { throw fail(key, "expected true or false") }
    return b
  }

  func double(_ key: String, default d: Double? = nil, range: ClosedRange<Double>) throws -> Double {
    guard let v = value(key) else { if let d { return d }; throw fail(key, "missing (expected a number in \(range))") }
    guard let x = v.double ?? v.int.map(Double.init) else { throw fail(key, "expected a number in \(range)") }
    guard range.contains(x) else { throw fail(key, "\(x) is outside \(range)") }
    return x
  }

  func path(_ key: String, default d: String? = nil) throws -> String {
    let s = try string(key, default: d)
    return s.hasPrefix("/") ? s : (dir as NSString).appendingPathComponent(s)
  }

  func paths(_ key: String) throws -> [String] {
    guard let v = value(key) else { throw fail(key, "missing (expected a list of paths)") }
    guard let a = v.array else { throw fail(key, "expected a list of paths") }
    return try (0..<a.count).map { i in
      guard let s = a[i].string else { throw fail("\(key)[\(i)]", "expected a string path") }
      return s.hasPrefix("/") ? s : (dir as NSString).appendingPathComponent(s)
    }
  }

  func choice<T: RawRepresentable & CaseIterable>(_ key: String, default d: T) throws -> T where T.RawValue == String {
    let s = try string(key, default: d.rawValue)
    guard let v = T(rawValue: s) else { throw fail(key, "\"\(s)\" is not one of \(T.allCases.map(\.rawValue))") }
    return v
  }
}
