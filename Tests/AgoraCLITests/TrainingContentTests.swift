import AgoraCrypto
import AgoraDisclosure
import AgoraHarness
import AgoraRegistry
import AgoraTestSupport
import AgoraWire
import Foundation
import Testing

/// The AI Act's public summary of training content through a real federation: institutions declare their data
/// (signed, metadata only), the coordinator its public corpus, and each version's summary names exactly the
/// contributors of its lineage.
@Suite(.serialized) struct TrainingContentTests {
  static func source(_ languages: [String], _ category: String, name: String?, license: String?) -> String {
    """

    [[source]]
    languages = [\(languages.map { "\"\($0)\"" }.joined(separator: ", "))]
    category = "\(category)"
    \(name.map { "name = \"\($0)\"\nurl = \"https://example.com/\($0.lowercased().replacingOccurrences(of: " ", with: "-"))\"" } ?? "confidential = true")
    description = "test text"
    \(license.map { "license = \"\($0)\"" } ?? "")
    content_types = ["news"]
    collection_start = "2026-01-01"
    collection_end = "2026-02-01"
    tdm_opt_outs = "none applies: a test"
    illegal_content = "none: a test"
    personal_data = "none: a test"
    """
  }

  /// Three institutions (one without a declaration, one that joins after round 1) and a donor: the version made
  /// before the late one contributed does not list it, the last does; a declaration signed by another key or
  /// altered on the way is refused with ERROR(1) and nothing is recorded; the summary's JSON validates against
  /// the committed schema; `export --release` names the institution that declared nothing and writes nothing.
  @Test func aVersionsSummaryComesFromTheDeclarationsOfItsLineage() throws {
    let extra = """
      [public]
      data = ["public"]
      declaration = "public/declaration.toml"
      [provider]
      name = "Test consortium"
      contact = "ops@test.invalid"
      model_name = "test-model"
      license = "Apache-2.0"
      placed_on_market = "on release"
      """
    let h = try Harness(nodes: [("alpha", ["de"]), ("beta", ["fr"]), ("gamma", ["nl"]), ("mallory", ["de"])], rounds: 5, innerSteps: 30, minNodes: 3,
                        extra: extra, donors: ["donor"])
    defer { h.cleanup() }
    func declare(_ node: String, _ body: String) throws {
      try ("declarant = \"\(node)\"\n" + body).write(toFile: "\(h.dir)/\(node)-declaration.toml", atomically: true, encoding: .utf8)
      let cfg = try String(contentsOfFile: "\(h.dir)/\(node).toml", encoding: .utf8)
      try (cfg + "\ndeclaration = \"\(node)-declaration.toml\"\n").write(toFile: "\(h.dir)/\(node).toml", atomically: true, encoding: .utf8)
    }
    try declare("alpha", Self.source(["de"], "public_dataset", name: "German news", license: "CC-BY-4.0"))
    try declare("gamma", Self.source(["nl"], "private_third_party", name: nil, license: nil))
    try ("declarant = \"coordinator\"\n" + Self.source(["it"], "public_dataset", name: "Italian pages", license: "GPL-3.0-or-later"))
      .write(toFile: h.dir + "/public/declaration.toml", atomically: true, encoding: .utf8)

    let c = try h.coordinator()
    let first = try ["alpha", "beta", "donor"].map { try h.node($0) }
    #expect(h.waitForRound(1) != nil)
    // A node speaking by hand: declarations it did not sign, or that changed on the way, are refused.
    let (me, _, ep) = try h.handClient("mallory")
    var welcomed = false
    waitUntil(30) {
      if case .success(.welcome)? = ep.receive(timeout: 0.2)?.message { welcomed = true }
      return welcomed
    }
    #expect(welcomed)
    let alphaKey = try Identity.load(from: h.dir + "/keys/alpha")
    let json = try Declaration(declarant: "mallory", sources: []).json()
    func answer(_ hash: [UInt8], _ sig: [UInt8], _ payload: [UInt8]) -> String? {
      ep.send(.declaration(hash: hash, signature: sig, payload: Payload(payload)))
      var text: String? = nil
      waitUntil(10) {
        if case .success(.error(let code, let t, _))? = ep.receive(timeout: 0.2)?.message, code == 1 { text = t }
        return text != nil
      }
      return text
    }
    let statement = Declaration.statement(federation: "test-federation", payload: json)
    let byAlpha = try Sodium.sign(statement, secretKey: alphaKey.signSecret)
    #expect(answer(Sodium.blake2b(json), byAlpha, json)?.contains("not signed by this node's key") == true)
    let own = try Sodium.sign(statement, secretKey: me.signSecret)
    var altered = json
    altered[altered.count - 3] = UInt8(ascii: "X")
    #expect(answer(Sodium.blake2b(json), own, altered)?.contains("not the BLAKE2b-256 of its payload") == true)
    #expect(answer(Sodium.blake2b(altered), own, altered)?.contains("not signed by this node's key") == true)
    let bad = Array("{\"format\":\"agora-declaration-9\",\"declarant\":\"m\",\"sources\":[]}".utf8)
    #expect(answer(Sodium.blake2b(bad), try Sodium.sign(Declaration.statement(federation: "test-federation", payload: bad), secretKey: me.signSecret), bad)?
      .contains("format") == true)
    ep.send(.leave(kind: .session, reason: "test done"))

    // gamma joins after round 1: the versions before its first contribution do not list it.
    #expect(h.waitForRound(1, "round_ended") != nil)
    let gamma = try h.node("gamma")
    #expect(h.wait(c, seconds: 180) && c.terminationStatus == 0)
    for n in first + [gamma] { _ = h.wait(n, seconds: 15) }

    let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
    let contributions = try store.contributions()
    let gammaFirst = try #require(contributions.filter { $0.name == "gamma" }.map(\.round).min(), "gamma contributed")
    #expect(gammaFirst > 1)
    let before = try #require(try store.versions().last { $0.round > 0 && $0.round < gammaFirst })
    let last = try #require(try store.latestVersion())
    let declared = try store.declarations()
    #expect(Set(declared.map(\.name)) == ["alpha", "gamma", "Test coordinator"], "one row each (resent after every WELCOME, recorded once); none of mallory's")
    #expect(declared.count == 3)

    func summary(_ v: Int) throws -> (json: [String: Any], raw: String, problems: String) {
      let (status, text) = try h.run(["summary", "\(v)", "--config", h.dir + "/coordinator.toml", "--format", "json"])
      #expect(status == 0, "\(text)")
      let split = text.range(of: "agora summary:")
      let raw = String(text[..<(split?.lowerBound ?? text.endIndex)])
      return (try JSONSerialization.jsonObject(with: Data(raw.utf8)) as! [String: Any], raw, split.map { String(text[$0.lowerBound...]) } ?? "")
    }
    let early = try summary(before.number), late = try summary(last.number)
    let earlyNames = (early.json["agora"] as! [String: Any])["contributors"] as! [String]
    #expect(!earlyNames.contains("gamma") && earlyNames.contains("alpha") && earlyNames.contains("donor"))
    #expect((early.json["2.2.2"] as! [String: Any])["used"] as? Bool == false)
    #expect(((late.json["agora"] as! [String: Any])["contributors"] as! [String]).contains("gamma"))
    let privateData = late.json["2.2.2"] as! [String: Any]
    #expect(privateData["used"] as? Bool == true)
    #expect(((privateData["sources"] as! [[String: Any]]).first?["name"] as? String)?.contains("withheld") == true)
    let publicSources = ((late.json["2.1"] as! [String: Any])["sources"] as! [[String: Any]]).map { $0["name"] as? String ?? "" }
    #expect(Set(publicSources) == ["German news", "Italian pages"], "alpha's, and the public corpus the donor trained on")
    #expect(late.problems.contains("contributor beta") && late.problems.contains("no declaration"), "\(late.problems)")

    // The JSON validates against the schema in Protocol/.
    let python = ProcessInfo.processInfo.environment["AGORA_PYTHON"] ?? repoRoot + "/.venv/bin/python"
    try #require(FileManager.default.isExecutableFile(atPath: python), "no Python environment at \(python): run scripts/setup --python")
    try late.raw.write(toFile: h.dir + "/late.json", atomically: true, encoding: .utf8)
    let (valid, out) = try runProcess(python, ["-c", "import json, sys, jsonschema\njsonschema.Draft202012Validator(json.load(open(sys.argv[1]))).validate(json.load(open(sys.argv[2])))",
                                               repoRoot + "/Protocol/training-content-summary.schema.json", h.dir + "/late.json"])
    #expect(valid == 0, "\(out)")

    // A release is refused, naming beta, and writes nothing; a plain export writes the summary and the card's keys.
    let (refused, why) = try h.run(["export", "\(last.number)", "--config", h.dir + "/coordinator.toml", "--out", h.dir + "/release", "--release"])
    #expect(refused != 0 && why.contains("beta") && why.contains("no declaration"), "\(why)")
    #expect(!FileManager.default.fileExists(atPath: h.dir + "/release"))
    let (exported, text) = try h.run(["export", "\(last.number)", "--config", h.dir + "/coordinator.toml", "--out", h.dir + "/export"])
    #expect(exported == 0, "\(text)")
    for f in ["training-content-summary.md", "training-content-summary.json"] { #expect(FileManager.default.fileExists(atPath: h.dir + "/export/" + f), "\(f)") }
    let card = try String(contentsOfFile: h.dir + "/export/README.md", encoding: .utf8)
    #expect(card.contains("language: [de, fr, it, nl]") && card.contains("license: apache-2.0") && card.contains("training-content-summary.md"), "\(card.prefix(400))")
    #expect(!card.contains("example.org"))

    // A declaration altered in the registry (behind its append-only triggers) no longer matches its signature: the
    // summary does not use it and says so.
    let alpha = try #require(declared.first { $0.name == "alpha" })
    try store.alterDeclarationForTesting(hash: alpha.hash, json: alpha.json.replacingOccurrences(of: "German news", with: "Other news"))
    let tampered = try summary(last.number)
    #expect(tampered.problems.contains("alpha") && tampered.problems.contains("altered"), "\(tampered.problems)")
    #expect(!tampered.raw.contains("Other news") && !tampered.raw.contains("German news"))
  }
}
