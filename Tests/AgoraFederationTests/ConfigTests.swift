@testable import AgoraRounds
import AgoraData
import AgoraTestSupport
import AgoraWire
import Foundation
import Testing

/// Configuration files refuse what they would otherwise ignore (issue 31, probe 6): a misspelt or unknown key, a
/// misspelt table, an override of a key that does not exist, and a missing file, each with the file, the key and
/// what to do.
@Suite struct ConfigTests {
  func federation(_ extra: String = "", rounds: String = "") throws -> (dir: String, path: String) {
    let dir = try temporaryDirectory("agora-config")
    try "{}".write(toFile: dir + "/tokenizer.json", atomically: true, encoding: .utf8)
    try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
    let text = """
      [federation]
      id = "f"
      endpoint = "tcp://127.0.0.1:5555"
      coordinator_card = "card.toml"
      [model]
      tokenizer = "tokenizer.json"
      [rounds]
      count = 3
      \(rounds)
      \(extra)
      """
    try text.write(toFile: dir + "/federation.toml", atomically: true, encoding: .utf8)
    return (dir, dir + "/federation.toml")
  }

  func refusal(_ body: () throws -> Void) -> ConfigError? {
    do { try body(); return nil } catch let e as ConfigError { return e } catch { Issue.record("not a ConfigError: \(error)"); return nil }
  }

  @Test func anUnknownKeyIsRefusedWithTheNearestValidOne() throws {
    let (dir, path) = try federation(rounds: "qourum = 0.9")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let e = try #require(refusal { _ = try FederationConfig(path: path) })
    #expect(e.file == path && e.key == "rounds.qourum" && e.description.contains("did you mean rounds.quorum?"), "\(e)")
  }

  @Test func aMisspeltTableIsRefused() throws {
    let (dir, path) = try federation("[round]\nquorum = 0.9")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let e = try #require(refusal { _ = try FederationConfig(path: path) })
    #expect(e.key == "round" && e.description.contains("did you mean rounds?"), "\(e)")
  }

  @Test func anOverrideOfAnUnknownKeyIsRefused() throws {
    let (dir, path) = try federation()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let e = try #require(refusal { _ = try FederationConfig(path: path, overrides: ["rounds.qourum=0.2"]) })
    #expect(e.key == "rounds.qourum" && e.description.contains("rounds.quorum"), "\(e)")
    // A known key overridden is fine, and a tokenizer table of a federation that does not federate it is read (checked).
    let ok = try FederationConfig(path: path, overrides: ["rounds.quorum=0.2", "tokenizer.min_count=3"])
    #expect(ok.quorum == 0.2 && ok.vocabulary == nil)
    #expect(refusal { _ = try FederationConfig(path: path, overrides: ["tokenizer.min_count=0"]) }?.key == "tokenizer.min_count")
  }

  @Test func aNodesMisspeltKeyIsRefused() throws {
    let (dir, _) = try federation()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try "[node]\nname = \"a\"\nfederation = \"federation.toml\"\nidentity = \"keys/a\"\ndata = [\"data\"]\nthread = 4\n"
      .write(toFile: dir + "/a.toml", atomically: true, encoding: .utf8)
    let e = try #require(refusal { _ = try NodeConfig(path: dir + "/a.toml") })
    #expect(e.file == dir + "/a.toml" && e.key == "node.thread" && e.description.contains("did you mean node.threads?"), "\(e)")
  }

  /// A path that does not exist is named with the file and key that give it, before anything starts.
  @Test func aMissingFileNamesTheKey() throws {
    let (dir, path) = try federation()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let fed = try FederationConfig(path: path, overrides: ["model.tokenizer=\"/nonexistent/tok.json\""])
    let e = try #require(refusal { try fed.requireFiles() })
    #expect(e.file == path && e.key == "model.tokenizer" && e.description.contains("/nonexistent/tok.json does not exist"), "\(e)")
    let eval = try FederationConfig(path: path, overrides: ["model.eval_data=[\"nowhere\"]"])
    #expect(refusal { try eval.requireFiles() }?.key == "model.eval_data[0]")
  }

  /// A relative path in a configuration read by a relative path is made absolute against the working directory:
  /// a bare file name is the configuration's neighbour.
  @Test func aBareFileNameIsTheConfigurationsNeighbour() throws {
    let here = FileManager.default.currentDirectoryPath
    let relative = ".build/test-config-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: here + "/" + relative, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: here + "/" + relative) }
    let (dir, _) = try federation()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    for f in ["federation.toml", "tokenizer.json"] { try FileManager.default.copyItem(atPath: dir + "/" + f, toPath: here + "/" + relative + "/" + f) }
    let fed = try FederationConfig(path: relative + "/federation.toml")
    #expect(fed.tokenizer == here + "/" + relative + "/tokenizer.json")
    try fed.requireFiles()
  }
}

/// Language names come from directory names (issue 31, probe 4: a directory named "nl⏎forged line" printed as two
/// lines in the coordinator's summary, and one with an ANSI escape put a raw 0x1B into an SVG, which then was
/// not XML). Such a directory is refused, naming it escaped; and text shown in HTML or SVG never carries a
/// character XML forbids.
@Suite struct HostileLanguageNameTests {
  @Test(arguments: ["nl\nforged line", "nl\u{1B}[31mred", "NL", "de/../x".replacingOccurrences(of: "/", with: "_") + "\u{202E}"])
  func aLanguageDirectoryThatIsNotALanguageNameIsRefused(name: String) throws {
    let dir = try temporaryDirectory("agora-names")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    for l in ["de", name] {
      try FileManager.default.createDirectory(atPath: dir + "/" + l, withIntermediateDirectories: true)
      try "text\n".write(toFile: dir + "/" + l + "/train.txt", atomically: true, encoding: .utf8)
    }
    do {
      _ = try LanguageSource.discover([dir])
      Issue.record("\(name.debugDescription) was taken as a language")
    } catch let e as DataError {
      guard case .badLanguageName = e else { Issue.record("\(e)"); return }
      let text = e.description
      #expect(!text.contains("\n") && !text.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x202E } && text.contains("rename it"), "\(text)")
    }
  }

  @Test func htmlTextNeverCarriesWhatXMLForbids() {
    let shown = Printable.html("nl\u{1B}[31m<b>\u{0}\u{FFFE}\tok\n")
    #expect(shown == "nl\u{FFFD}[31m&lt;b&gt;\u{FFFD}\u{FFFD}\tok\n")
  }
}
