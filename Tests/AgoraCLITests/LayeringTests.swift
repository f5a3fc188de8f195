import AgoraTestSupport
import Foundation
import Testing

/// The libraries are layered (README, "Layout"): a library imports only libraries of lower layers, C shims and
/// the external packages it declares. This reads every source file's imports and Package.swift's dependencies.
@Suite struct LayeringTests {
  static let layers: [String: Int] = [
    "AgoraWire": 1, "AgoraTensor": 1, "AgoraDigest": 1, "AgoraDigestAVX512": 0, "AgoraDigestAVX2": 0, "AgoraStorage": 1,
    "AgoraCrypto": 2, "AgoraModel": 2,
    "AgoraData": 3, "AgoraTransport": 3, "AgoraRegistry": 3,
    "AgoraTrainer": 4,
    "AgoraFederation": 5,
    "AgoraDashboard": 6,
    "agora": 7,
  ]
  /// Modules that are not Agora's libraries: the system, C shims, external packages.
  static func isOutside(_ module: String) -> Bool { layers[module] == nil }

  func imports(of target: String) throws -> Set<String> {
    let dir = repoRoot + "/Sources/" + target
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
  func declared(_ target: String) throws -> Set<String> {
    let package = try String(contentsOfFile: repoRoot + "/Package.swift", encoding: .utf8)
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

  @Test func everyLibraryImportsOnlyWhatIsBelowItAndDeclared() throws {
    let targets = try FileManager.default.contentsOfDirectory(atPath: repoRoot + "/Sources").filter { Self.layers[$0] != nil }
    #expect(targets.count == Self.layers.count, "a library without a layer: \(targets.sorted())")
    for t in targets {
      let declared = try declared(t)
      for m in try imports(of: t) where m != t {
        if let layer = Self.layers[m] {
          #expect(layer < Self.layers[t]!, "\(t) (layer \(Self.layers[t]!)) imports \(m) (layer \(layer))")
          #expect(declared.contains(m), "\(t) imports \(m) without declaring it in Package.swift")
        } else if m.hasPrefix("C") || ["GRDB", "TOMLKit", "Hummingbird", "Prometheus", "Logging", "ArgumentParser"].contains(m) {
          #expect(declared.contains(m) || ["GRDB": "GRDB", "Hummingbird": "Hummingbird", "Prometheus": "Prometheus", "Logging": "Logging",
                                           "ArgumentParser": "ArgumentParser", "TOMLKit": "TOMLKit"][m].map(declared.contains) == true,
                  "\(t) imports \(m) without declaring it in Package.swift")
        }
      }
    }
  }
}
