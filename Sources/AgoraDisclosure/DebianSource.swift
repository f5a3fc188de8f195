import Foundation

/// What Debian says about an installed package, for declaring text taken from it: its version, home page and
/// licence (from `/usr/share/doc/<package>/copyright`, machine-readable or not, as an SPDX expression). A licence
/// this reader cannot tell is an error naming the file: it is never guessed.
public struct DebianSource: Sendable, Equatable {
  public var package: String
  public var version: String
  public var homepage: String?
  public var license: String

  public static func read(_ package: String, docRoot: String = "/usr/share/doc") throws -> DebianSource {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/dpkg-query")
    p.arguments = ["-W", "-f", "${Version}\t${Homepage}", package]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    do { try p.run() } catch { throw DeclarationError(file: "dpkg-query", key: package, problem: "cannot run dpkg-query: \(error)") }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw DeclarationError(file: "dpkg-query", key: package, problem: "the Debian package is not installed") }
    let fields = String(decoding: data, as: UTF8.self).split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
    let path = "\(docRoot)/\(package)/copyright"
    guard let text = FileManager.default.contents(atPath: path).map({ String(decoding: $0, as: UTF8.self) }) else {
      throw DeclarationError(file: path, key: "-", problem: "cannot read the package's copyright file")
    }
    guard let license = spdx(copyright: text) else {
      throw DeclarationError(file: path, key: "License", problem: "cannot tell its licence as an SPDX expression: declare this source by hand")
    }
    let home = fields.count > 1 && !fields[1].isEmpty ? fields[1] : nil
    return DebianSource(package: package, version: fields.first ?? "", homepage: home, license: license)
  }

  /// The licence of a copyright file as an SPDX expression: a machine-readable file's `License:` short names
  /// (Debian's own files under `debian/*` left out), several joined with AND; a prose file that names the GNU GPL
  /// and its version. nil when it cannot be told.
  public static func spdx(copyright text: String) -> String? {
    if text.hasPrefix("Format:") {
      var names: Set<String> = []
      var packagingOnly = false
      for stanza in text.components(separatedBy: "\n\n") {
        let lines = stanza.split(separator: "\n").map(String.init)
        if let files = lines.first(where: { $0.hasPrefix("Files:") }) { packagingOnly = files.dropFirst(6).trimmingCharacters(in: .whitespaces).hasPrefix("debian/") }
        guard !packagingOnly, let l = lines.first(where: { $0.hasPrefix("License:") }) else { continue }
        let name = l.dropFirst(8).trimmingCharacters(in: .whitespaces)
        if !name.isEmpty, lines.contains(where: { $0.hasPrefix("Files:") }) { names.insert(name) }
      }
      let mapped = names.sorted().map(debianToSPDX)
      guard !mapped.isEmpty, mapped.allSatisfy({ $0 != nil }) else { return nil }
      let ids = Array(Set(mapped.compactMap { $0 })).sorted()
      return ids.joined(separator: " AND ")
    }
    // Prose: "licensed under the terms of the GNU GPL, version 2" (and "or any later version" where it says so).
    let flat = text.replacingOccurrences(of: "\n", with: " ").lowercased()
    guard flat.contains("gnu gpl") || flat.contains("gnu general public license") else { return nil }
    let later = flat.contains("any later version")
    for v in ["3", "2"] where flat.contains("version \(v)") {
      return "GPL-\(v).0-" + (later ? "or-later" : "only")
    }
    return nil
  }

  /// Debian's short licence names (copyright-format 1.0) as SPDX ids; nil for one this table lacks.
  static func debianToSPDX(_ name: String) -> String? {
    let table: [String: String] = [
      "GPL-2": "GPL-2.0-only", "GPL-2+": "GPL-2.0-or-later", "GPL-3": "GPL-3.0-only", "GPL-3+": "GPL-3.0-or-later",
      "LGPL-2.1": "LGPL-2.1-only", "LGPL-2.1+": "LGPL-2.1-or-later", "LGPL-3": "LGPL-3.0-only", "LGPL-3+": "LGPL-3.0-or-later",
      "AGPL-3": "AGPL-3.0-only", "AGPL-3+": "AGPL-3.0-or-later", "Expat": "MIT", "MIT": "MIT", "Apache-2.0": "Apache-2.0",
      "BSD-2-clause": "BSD-2-Clause", "BSD-3-clause": "BSD-3-Clause", "CC0-1.0": "CC0-1.0", "CC-BY-4.0": "CC-BY-4.0",
      "CC-BY-SA-4.0": "CC-BY-SA-4.0", "GFDL-1.3+": "GFDL-1.3-or-later", "GFDL-1.2+": "GFDL-1.2-or-later", "MPL-2.0": "MPL-2.0",
    ]
    return table[name]
  }
}

/// The demo's declarations, made at set-up from what Debian ships with the packages the demo's text comes from:
/// each package's licence (its copyright file), version and home page, and the day the text was taken.
public enum DebianDeclaration {
  /// One text source of the demo: a Debian package, the languages of the demo's data it fed, and what it is.
  public struct Package: Sendable {
    public var package: String
    public var languages: [String]
    public var title: String
    public var contentTypes: [String]
    public init(package: String, languages: [String], title: String, contentTypes: [String]) {
      self.package = package; self.languages = languages; self.title = title; self.contentTypes = contentTypes
    }
  }

  /// A declaration of `packages`, collected `day` (YYYY-MM-DD), `how` saying what was done with their text.
  public static func make(_ packages: [Package], declarant: String, day: String, how: String) throws -> Declaration {
    let sources = try packages.map { p -> DeclaredSource in
      let d = try DebianSource.read(p.package)
      return DeclaredSource(
        languages: p.languages, category: .publicDataset, name: "\(p.title) (Debian package \(d.package) \(d.version))",
        url: d.homepage ?? "https://packages.debian.org/\(d.package)",
        description: "\(p.title), as the Debian package \(d.package) \(d.version) ships it; \(how)",
        license: d.license, modality: "text", contentTypes: p.contentTypes, collectionStart: day, collectionEnd: day,
        tdmOptOuts: "Not gathered from the web: installed with apt from the Debian archive under the package's own licence (\(d.license)), which permits this use; the package carries no reservation of rights.",
        illegalContent: "None removed: software documentation written and reviewed by Debian's and its upstreams' authors and translators; no filter was applied.",
        personalData: "The pages may name their authors and translators (names, e-mail addresses) as the package ships them; nothing else personal; nothing removed.")
    }
    return Declaration(declarant: declarant, sources: sources)
  }
}
