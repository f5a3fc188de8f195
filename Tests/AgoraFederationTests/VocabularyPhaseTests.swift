import AgoraCrypto
import AgoraFederation
import AgoraModel
import AgoraRegistry
import AgoraTestSupport
import AgoraWire
import Foundation
import Testing

/// The vocabulary phase (SPEC §4.4) through real coordinator and node processes on loopback.
@Suite(.serialized) struct VocabularyPhaseTests {
  /// Two institutions and a compute donor; no tokenizer anywhere. The coordinator learns it from the nodes'
  /// count tables (thresholds off): byte for byte the tokenizer learned from the union of their text; every
  /// node gets it signed, the federation trains with it, version 0 names it, and vocabulary.json says who
  /// contributed which languages. A node that starts after the phase gets the same tokenizer.
  @Test func theFederationLearnsItsVocabularyFromCountTables() throws {
    let h = try Harness(nodes: [("a", ["de"]), ("b", ["fr", "pl"])], rounds: 2, innerSteps: 3, minNodes: 2,
                        extra: "\n[tokenizer]\nfederated = true\nvocab_size = 512\nbalance = \"bytes\"\nmin_count = 1\nmin_documents = 1\nphase_seconds = 120"
                          + "\n[public]\ndata = [\"public\"]\nshard_bytes = 8192",
                        donors: ["volunteer"])
    defer { h.cleanup() }
    // What `BPETrainer` learns from the union of the text — the institutions' and the coordinator's public corpus
    // (Italian), languages in name order — 512 tokens, equal bytes: the federation must learn the same.
    var direct = BPETrainer()
    for (l, path) in [("de", "data/de"), ("fr", "data/fr"), ("it", "public/it"), ("pl", "data/pl")] {
      direct.addLanguage(l, texts: [try String(contentsOfFile: h.dir + "/\(path)/train.txt", encoding: .utf8)])
    }
    let union = try direct.train(vocabSize: 512).jsonData()
    let f = h.dir + "/federation.toml"
    try String(contentsOfFile: f, encoding: .utf8).replacingOccurrences(of: "tokenizer = \"tokenizer.json\"", with: "tokenizer = \"federated/tokenizer.json\"")
      .replacingOccurrences(of: "eval_data = [\"data\"]", with: "")
      .write(toFile: f, atomically: true, encoding: .utf8)
    let coord = try h.coordinator()
    let nodes = try ["a", "b", "volunteer"].map { try h.node($0) }
    #expect(h.wait(coord, seconds: 180) && coord.terminationStatus == 0, "\(h.read("coordinator.log"))")
    for p in nodes { _ = h.wait(p, seconds: 30) }
    let learned = try Data(contentsOf: URL(fileURLWithPath: h.dir + "/federated/tokenizer.json"))
    #expect(learned == union, "the federated tokenizer is not the one learned from the union of the text")
    let log = h.read("coordinator.log")
    #expect(log.contains("volunteer holds no text") && log.contains("and the public corpus"), "\(log)")
    #expect(h.rows().count == 2, "\(h.rows()) \(log)")
    #expect(h.read("volunteer.log").contains("saved to"))
    for n in ["a", "b"] {
      let nl = h.read("\(n).log")
      #expect(nl.contains("saved to") && nl.contains("signed by the coordinator"), "\(nl)")
    }
    #expect(h.read("a.log").contains("de: sending"))
    // vocabulary.json names the contributors and their languages; version 0 names the tokenizer's hash.
    let summary = try String(contentsOfFile: h.dir + "/coordinator/vocabulary.json", encoding: .utf8)
    let hash = hex(Sodium.blake2b([UInt8](learned)))
    #expect(summary.contains(hash) && summary.contains("\"name\":\"a\"") && summary.contains("\"pl\"") && summary.contains("\"de\""), "\(summary)")
    let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
    #expect(try store.version(0).tokenizer == hash)
    #expect(summary.contains("\"tokens_per_byte\""))
    // The exported model card says how the vocabulary was learned and from whom; vocabulary.json goes along.
    let out = h.dir + "/export"
    let (status, text) = try h.run(["export", "2", "--config", h.dir + "/coordinator.toml", "--out", out])
    #expect(status == 0, "\(text)")
    let card = try String(contentsOfFile: out + "/README.md", encoding: .utf8)
    #expect(card.contains("## Tokenizer") && card.contains(hash) && card.contains("vocabulary phase") && card.contains("| a | de ("), "\(card)")
    #expect(FileManager.default.fileExists(atPath: out + "/vocabulary.json"))
  }
}
