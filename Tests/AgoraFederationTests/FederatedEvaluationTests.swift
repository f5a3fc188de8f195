import AgoraCrypto
@testable import AgoraRounds
import AgoraRegistry
import AgoraHarness
import AgoraTestSupport
import AgoraTransport
import AgoraWire
import Foundation
import Testing

/// Federated evaluation (SPEC §4.3): every institution scores each version it trains on, on its own validation
/// text, and sends only the signed figures; the registry, `agora show` and the model card list them.
@Suite(.serialized) struct FederatedEvaluationTests {
  @Test func institutionsReportTheirScoresOfEveryVersion() throws {
    let h = try Harness(nodes: [("east", ["de", "pl"]), ("west", ["fr"])], rounds: 2, innerSteps: 6, quorum: 1.0, deadline: 90)
    defer { h.cleanup() }
    // west states what it scores trained alone.
    let westConfig = h.dir + "/west.toml"
    try (try String(contentsOfFile: westConfig, encoding: .utf8) + "\nalone_bits_per_byte = { fr = 3.25 }\n").write(toFile: westConfig, atomically: true, encoding: .utf8)
    let c = try h.coordinator()
    let nodes = try h.nodes.map { try h.node($0) }
    #expect(h.wait(c, seconds: 120) && c.terminationStatus == 0, "\(h.read("coordinator.log"))")
    for n in nodes { _ = h.wait(n, seconds: 15) }
    let log = h.read("coordinator.log")
    print(log)
    for (who, v) in [("east", 0), ("west", 0), ("east", 1), ("west", 1)] {
      #expect(log.contains("\(who) scores version \(v) on its own text: "), "\(who), version \(v)")
    }
    // In the registry: versions 0 and 1 (the nodes score the version they train on; version 2 is trained on by nobody),
    // each language of each node, with the node's signature over the report.
    let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
    let records = try store.evaluations()
    #expect(Set(records.map { "\($0.version) \($0.name) \($0.language)" })
            == ["0 east de", "0 east pl", "0 west fr", "1 east de", "1 east pl", "1 west fr"], "\(records)")
    #expect(records.allSatisfy { $0.bitsPerByte > 1 && $0.bitsPerByte < 12 && $0.bytes > 100 })
    #expect(records.filter { $0.name == "west" }.allSatisfy { $0.alone == 3.25 } && records.filter { $0.name == "east" }.allSatisfy { $0.alone == nil })
    for v in [0, 1] {
      let mine = records.filter { $0.version == v && $0.name == "west" }
      guard !mine.isEmpty else { Issue.record("no report of west for version \(v): \(h.read("west.log"))"); continue }
      let card = try EnrolmentCard.load(h.dir + "/keys/enrolled/west.toml")
      let version = try store.version(v)
      let scores = mine.map { LanguageScore(language: $0.language, bitsPerByte: Float($0.bitsPerByte), bytes: UInt64($0.bytes), alone: $0.alone.map(Float.init) ?? .nan) }
      let statement = LanguageScore.statement(federation: "test-federation", version: UInt64(v), hash: unhex(version.hash)!, scores: scores)
      #expect(Sodium.verify(unhex(mine[0].signature)!, message: statement, publicKey: card.signPublic), "west's signature of version \(v)")
    }
    // Training improved the institutions' own figures (version 1 against version 0, on every language).
    for r in records where r.version == 1 {
      let before = records.first { $0.version == 0 && $0.node == r.node && $0.language == r.language }!
      #expect(r.bitsPerByte < before.bitsPerByte, "\(r.name) \(r.language): \(before.bitsPerByte) → \(r.bitsPerByte)")
    }
    // `agora show` and the model card list them.
    let (status, shown) = try h.run(["show", "2", "--config", h.dir + "/coordinator.toml"])
    #expect(status == 0, "\(shown)")
    #expect(shown.contains("bits per byte the institutions report on their own validation text") && shown.contains("| fr | west |")
            && shown.contains("3.250"), "\(shown)")
    let (exported, out) = try h.run(["export", "2", "--config", h.dir + "/coordinator.toml", "--out", h.dir + "/export"])
    #expect(exported == 0, "\(out)")
    let card = (try? String(contentsOfFile: h.dir + "/export/README.md", encoding: .utf8)) ?? ""
    #expect(card.contains("## Evaluation by the institutions") && card.contains("| pl | east |"), "\(card)")
  }

  /// A report signed with another key, or about a version the federation does not have, is refused with a typed
  /// error and nothing is recorded; a well-signed one is recorded.
  @Test func forgedOrUnknownReportsAreRefused() throws {
    let h = try Harness(nodes: [("rogue", ["fr"]), ("other", ["de"])], rounds: 1, innerSteps: 5, quorum: 0.5, deadline: 20, minNodes: 1)
    defer { h.cleanup() }
    let c = try h.coordinator()
    let rogue = try HandNode(h, "rogue")
    defer { rogue.ep.close() }
    guard let r = rogue.nextRound(seconds: 30) else { Issue.record("no ROUND"); return }
    let other = try Identity.load(from: h.dir + "/keys/other")
    let scores = [LanguageScore(language: "fr", bitsPerByte: 4.5, bytes: 1000)]
    func report(version: UInt64, hash: [UInt8], signer: Identity) throws -> Message {
      let st = LanguageScore.statement(federation: "test-federation", version: version, hash: hash, scores: scores)
      return .evaluation(version: version, hash: hash, scores: scores, signature: try Sodium.sign(st, secretKey: signer.signSecret))
    }
    func answer() -> (UInt16, String)? {
      let end = Date(timeIntervalSinceNow: 5)
      while Date() < end {
        guard let m = rogue.ep.receive(timeout: 0.5) else { continue }
        if case .success(.error(let code, let text, _)) = m.message { return (code, text) }
      }
      return nil
    }
    rogue.ep.send(try report(version: r.version, hash: r.base, signer: other))
    let forged = answer()
    #expect(forged?.0 == ErrorCode.malformed.rawValue && forged?.1.contains("not signed by this node's key") == true, "\(String(describing: forged))")
    rogue.ep.send(try report(version: r.version, hash: [UInt8](repeating: 9, count: 32), signer: rogue.id))
    let unknown = answer()
    #expect(unknown?.0 == ErrorCode.unknownVersion.rawValue, "\(String(describing: unknown))")
    rogue.ep.send(try report(version: r.version, hash: r.base, signer: rogue.id))
    #expect(waitUntil(30) { h.read("coordinator.log").contains("rogue scores version") })
    #expect(h.wait(c, seconds: 60))
    let records = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false).evaluations()
    #expect(records.map { "\($0.version) \($0.name) \($0.language) \($0.bitsPerByte)" } == ["\(r.version) rogue fr 4.5"], "\(records)")
  }
}
