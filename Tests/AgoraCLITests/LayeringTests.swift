import AgoraTestSupport
import Foundation
import Testing

/// The libraries are layered (docs/ARCHITECTURE.md): a library imports only libraries of lower layers, C shims
/// and the external packages it declares; every library has a layer, and none holds more than 15% of Sources'
/// lines. This reads every source file's imports and Package.swift's dependencies.
@Suite struct LayeringTests {
  static let layers: [String: Int] = [
    "AgoraText": 0,
    "AgoraWire": 1, "AgoraTensor": 1, "AgoraDigest": 1, "AgoraDigestAVX512": 0, "AgoraDigestAVX2": 0, "AgoraStorage": 1,
    "AgoraCluster": 1, "AgoraLinkEmulator": 1,
    "AgoraCrypto": 2, "AgoraModel": 2,
    "AgoraData": 3, "AgoraFineTune": 3, "AgoraImport": 3, "AgoraGeneration": 3, "AgoraTransport": 3, "AgoraRegistry": 3, "AgoraSecureAggregation": 3,
    "AgoraDisclosure": 3,
    "AgoraTrainer": 4,
    "AgoraRounds": 5,
    "AgoraCoordinator": 6, "AgoraNode": 6, "AgoraSimulation": 6,
    "AgoraDashboard": 7, "AgoraBench": 7, "AgoraServices": 8,
    "agora": 9,
  ]
  /// External packages a target may import, by the product name it declares.
  static let external: Set<String> = ["GRDB", "TOMLKit", "Hummingbird", "HummingbirdTesting", "Prometheus", "Logging", "ArgumentParser"]

  /// The modules a directory's Swift files import (`import X`, `@testable import X`).
  static func imports(inDirectory dir: String) throws -> Set<String> {
    var found: Set<String> = []
    for f in try FileManager.default.contentsOfDirectory(atPath: dir) where f.hasSuffix(".swift") {
      for line in try String(contentsOfFile: dir + "/" + f, encoding: .utf8).split(separator: "\n") {
        let words = line.split(separator: " ")
        if let i = words.firstIndex(of: "import"), i + 1 < words.count, words[..<i].allSatisfy({ $0.hasPrefix("@") }) {
          found.insert(String(words[i + 1]))
        }
      }
    }
    return found
  }

  /// The names in a target's `dependencies: [...]` in Package.swift (its own libraries and products).
  static func declared(_ target: String, in package: String) -> Set<String> {
    // The first `name: "target"` whose call goes on with `dependencies: [` (the products list names targets too).
    var search = package.startIndex..<package.endIndex
    var found: Substring? = nil
    while let start = package.range(of: "name: \"\(target)\"", range: search) {
      let rest = package[start.upperBound...]
      if let deps = rest.range(of: "dependencies: ["), rest[..<deps.lowerBound].firstIndex(of: ")") == nil { found = rest[deps.upperBound...]; break }
      search = start.upperBound..<package.endIndex
    }
    guard let list = found else { return [] }
    var depth = 0, text = ""
    for c in list {
      if c == "[" { depth += 1 }
      if c == "]" { if depth == 0 { break }; depth -= 1 }
      text.append(c)
    }
    var names: Set<String> = []
    for part in text.split(separator: "\"", omittingEmptySubsequences: false).enumerated() where part.offset % 2 == 1 { names.insert(String(part.element)) }
    return names
  }

  /// What is wrong with a set of library targets: one without a layer, an import of a library that is not
  /// below, an import not declared. `targets` maps each target to its imports and declared dependencies; C shims
  /// (`isShim`) need no layer. Empty when the graph is sound.
  static func violations(targets: [String: (imports: Set<String>, declared: Set<String>)], layers: [String: Int],
                         isShim: (String) -> Bool) -> [String] {
    var found: [String] = []
    for (t, info) in targets.sorted(by: { $0.key < $1.key }) {
      guard let own = layers[t] else {
        if !isShim(t) { found.append("\(t) is a library without a layer (add it to LayeringTests.layers and docs/ARCHITECTURE.md)") }
        continue
      }
      for m in info.imports.sorted() where m != t {
        if let layer = layers[m] {
          if layer >= own { found.append("\(t) (layer \(own)) imports \(m) (layer \(layer))") }
          if !info.declared.contains(m) { found.append("\(t) imports \(m) without declaring it in Package.swift") }
        } else if isShim(m) || external.contains(m) {
          if !info.declared.contains(m) { found.append("\(t) imports \(m) without declaring it in Package.swift") }
        } else if m.hasPrefix("Agora") {
          found.append("\(t) imports \(m), which is no library of this package")
        }
      }
    }
    return found
  }

  static func isShim(_ name: String) -> Bool {
    FileManager.default.fileExists(atPath: repoRoot + "/Sources/" + name + "/module.modulemap")
  }

  static func sourceTargets() throws -> [String: (imports: Set<String>, declared: Set<String>)] {
    let package = try String(contentsOfFile: repoRoot + "/Package.swift", encoding: .utf8)
    var targets: [String: (imports: Set<String>, declared: Set<String>)] = [:]
    for t in try FileManager.default.contentsOfDirectory(atPath: repoRoot + "/Sources") {
      targets[t] = (try imports(inDirectory: repoRoot + "/Sources/" + t), declared(t, in: package))
    }
    return targets
  }

  @Test func everyLibraryHasALayerAndImportsOnlyWhatIsBelowItAndDeclared() throws {
    let problems = Self.violations(targets: try Self.sourceTargets(), layers: Self.layers, isShim: Self.isShim)
    #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    // Every layer named is a directory of Sources (a renamed target leaves no stale entry).
    for t in Self.layers.keys { #expect(FileManager.default.fileExists(atPath: repoRoot + "/Sources/" + t), "\(t) is in the layer map but not in Sources") }
  }

  /// The check above can fail: a target it does not know, one importing upwards, one importing what it does
  /// not declare are each named.
  @Test func anUnmappedTargetAnUpwardImportAndAnUndeclaredOneAreFound() throws {
    var targets = try Self.sourceTargets()
    targets["AgoraNewThing"] = (["AgoraWire"], ["AgoraWire"])
    targets["AgoraTensor"]!.imports.insert("AgoraCoordinator")
    targets["AgoraTensor"]!.declared.insert("AgoraCoordinator")
    targets["AgoraNode"]!.imports.insert("AgoraRegistry")
    let problems = Self.violations(targets: targets, layers: Self.layers, isShim: Self.isShim)
    #expect(problems == [
      "AgoraNewThing is a library without a layer (add it to LayeringTests.layers and docs/ARCHITECTURE.md)",
      "AgoraNode imports AgoraRegistry without declaring it in Package.swift",
      "AgoraTensor (layer 1) imports AgoraCoordinator (layer 6)",
    ], "\(problems)")
  }

  /// Test targets import only what they declare (no library reached through another's dependencies).
  @Test func everyTestTargetDeclaresWhatItImports() throws {
    let package = try String(contentsOfFile: repoRoot + "/Package.swift", encoding: .utf8)
    for t in try FileManager.default.contentsOfDirectory(atPath: repoRoot + "/Tests") where t != "Fuzz" {
      let declared = Self.declared(t, in: package)
      for m in try Self.imports(inDirectory: repoRoot + "/Tests/" + t) where m.hasPrefix("Agora") || m.hasPrefix("C") || Self.external.contains(m) {
        #expect(declared.contains(m), "test target \(t) imports \(m) without declaring it in Package.swift")
      }
    }
  }

  /// No library holds more than 15% of Sources' Swift lines (issue 32: AgoraFederation held 27%).
  @Test func noLibraryHoldsMoreThanFifteenPercentOfTheSources() throws {
    var lines: [String: Int] = [:]
    let root = repoRoot + "/Sources"
    for t in try FileManager.default.contentsOfDirectory(atPath: root) {
      guard let e = FileManager.default.enumerator(atPath: root + "/" + t) else { continue }
      for case let f as String in e where f.hasSuffix(".swift") {
        lines[t, default: 0] += try String(contentsOfFile: root + "/" + t + "/" + f, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).count
      }
    }
    let total = lines.values.reduce(0, +)
    #expect(total > 10_000)
    for (t, n) in lines.sorted(by: { $0.value > $1.value }) {
      #expect(Double(n) <= 0.15 * Double(total), "\(t) has \(n) of \(total) lines (\(Int((100 * Double(n) / Double(total)).rounded()))%)")
    }
  }
}
