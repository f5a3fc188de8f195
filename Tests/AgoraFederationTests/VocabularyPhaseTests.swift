import AgoraCrypto
import AgoraRounds
import AgoraModel
import AgoraRegistry
import AgoraHarness
import AgoraTestSupport
import AgoraTransport
import AgoraWire
import Foundation
import Testing

/// The vocabulary phase (SPEC §4.4) through real coordinator and node processes on loopback.
@Suite(.serialized) struct VocabularyPhaseTests {
  /// Two institutions and a compute donor; no tokenizer anywhere. The coordinator learns it from the nodes'
  /// count tables (thresholds off): byte for byte the tokenizer learned from the union of their text; every
  /// node gets it signed, the federation trains with it, version 0 names it, and vocabulary.json says who
  /// contributed which languages.
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
    let (s2, shown) = try h.run(["show", "2", "--config", h.dir + "/coordinator.toml"])
    // (contributors in fingerprint order)
    #expect(s2 == 0 && shown.contains("learned in the vocabulary phase from ") && shown.contains("a (de)") && shown.contains("b (fr, pl)")
              && shown.contains("the public corpus (it)"), "\(shown)")
  }

  /// `model.tokenizer = "tokenizer.json"`, a bare file name, with every process started from the configuration's
  /// own directory and given its configuration by a relative path (issue 31, probe 3: the coordinator, then the
  /// nodes, died once the tables were in, creating a directory for an empty path). The tokenizer lands beside
  /// federation.toml and the rounds run.
  @Test func aBareTokenizerFileNameRunFromTheConfigsDirectoryWorks() throws {
    let h = try Harness(nodes: [("a", ["de"]), ("b", ["fr"])], rounds: 1, innerSteps: 2, minNodes: 2,
                        extra: "\n[tokenizer]\nfederated = true\nvocab_size = 300\nmin_count = 1\nmin_documents = 1\nphase_seconds = 120")
    defer { h.cleanup() }
    try FileManager.default.removeItem(atPath: h.dir + "/tokenizer.json")
    let coord = try h.start(["coordinator", "--config", "coordinator.toml"], log: "coordinator.log", directory: h.dir)
    let nodes = try ["a", "b"].map { try h.start(["node", "--config", "\($0).toml"], log: "\($0).log", directory: h.dir) }
    defer { for n in nodes where n.isRunning { n.terminate() } }
    #expect(h.wait(coord, seconds: 120) && coord.terminationStatus == 0, "\(h.read("coordinator.log"))")
    for n in nodes { #expect(h.wait(n, seconds: 30) && n.terminationStatus == 0, "\(h.read("a.log")) \(h.read("b.log"))") }
    #expect(FileManager.default.fileExists(atPath: h.dir + "/tokenizer.json"))
    #expect(h.rows().count == 1, "\(h.read("coordinator.log"))")
  }

  /// A table signed with another node's key, one not sealed to the coordinator, and a malformed one are refused
  /// with an ERROR each and counted nowhere; JOIN during the phase is told to send tables first. The phase then
  /// completes with the honest tables alone.
  @Test func badTablesAreRefusedAndCountedNowhere() throws {
    let h = try Harness(nodes: [("a", ["de"]), ("b", ["fr"])], rounds: 1, innerSteps: 2,
                        extra: "\n[tokenizer]\nfederated = true\nvocab_size = 400\nbalance = \"bytes\"\nmin_count = 1\nmin_documents = 1\nphase_seconds = 60")
    defer { h.cleanup() }
    let f = h.dir + "/federation.toml"
    try String(contentsOfFile: f, encoding: .utf8).replacingOccurrences(of: "tokenizer = \"tokenizer.json\"", with: "tokenizer = \"federated/tokenizer.json\"")
      .write(toFile: f, atomically: true, encoding: .utf8)
    var direct = BPETrainer()
    for l in ["de", "fr"] { direct.addLanguage(l, texts: [try String(contentsOfFile: h.dir + "/data/\(l)/train.txt", encoding: .utf8)]) }
    let union = try direct.train(vocabSize: 400).jsonData()
    let coord = try h.coordinator()
    // A hand-driven client with b's identity.
    let b = try Identity.load(from: h.dir + "/keys/b"), a = try Identity.load(from: h.dir + "/keys/a")
    let card = try EnrolmentCard.load(h.dir + "/keys/coordinator/card.toml")
    let ep = try Endpoint.client(connect: "tcp://127.0.0.1:\(h.port)", serverKey: card.curvePublic,
                                 keys: CurveKeys(publicKey: b.card.curvePublic, secretKey: b.curveSecret))
    defer { ep.close() }
    let poison = PreTokenCounts(language: "fr", bytes: 100, characters: 100, documents: 1,
                                entries: [Array("Zyqwortpoison".utf8): .init(count: 1_000_000, documents: 1)]).encoded()
    let statement = VocabularyStatement.table(federation: "test-federation", table: poison)
    let other = try Sodium.boxKeypair()
    let garbage = Array("AGVC".utf8) + [1, 2, 0x66, 0x72, 5]
    let attempts: [(String, [UInt8], [UInt8])] = [
      ("signed by a", try Sodium.sign(statement, secretKey: a.signSecret), try Sodium.seal(poison, to: card.aggregationPublic!)),
      ("not sealed to the coordinator", try Sodium.sign(statement, secretKey: b.signSecret), try Sodium.seal(poison, to: other.publicKey)),
      ("malformed", try Sodium.sign(VocabularyStatement.table(federation: "test-federation", table: garbage), secretKey: b.signSecret),
       try Sodium.seal(garbage, to: card.aggregationPublic!)),
    ]
    for (_, sig, payload) in attempts { ep.send(.vocabulary(remaining: 0, signature: sig, payload: Payload(payload))) }
    ep.send(.join(name: "b", software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0,
                  terms: TrainingTerms(tokenizerHash: [UInt8](repeating: 0, count: 32), modelHash: [UInt8](repeating: 0, count: 32),
                                       innerSteps: 2, batch: 8, learningRateBits: 0, rounds: 1)))
    var errors: [String] = []
    let end = Date(timeIntervalSinceNow: 20)
    while errors.count < 4 && Date() < end {
      if let m = ep.receive(timeout: 0.5), case .success(.error(_, let text, _)) = m.message { errors.append(text) }
    }
    #expect(errors.count == 4, "\(errors)")
    #expect(errors.contains { $0.contains("not signed by this node's key") } && errors.contains { $0.contains("not sealed") }
              && errors.contains { $0.contains("truncated") } && errors.contains { $0.contains("send your count tables") }, "\(errors)")
    // The honest nodes complete the phase; nothing of the refused tables is in the vocabulary.
    let nodes = try ["a", "b"].map { try h.node($0) }
    #expect(h.wait(coord, seconds: 120) && coord.terminationStatus == 0, "\(h.read("coordinator.log"))")
    for p in nodes { _ = h.wait(p, seconds: 30) }
    let learned = try Data(contentsOf: URL(fileURLWithPath: h.dir + "/federated/tokenizer.json"))
    #expect(learned == union)
    #expect(!String(decoding: learned, as: UTF8.self).contains("Zyq"))
  }

  /// An institution that starts after the phase (here: enrolled, but down while the phase ran; the phase waited
  /// its `phase_seconds` and learned from the others) gets the federation's fixed tokenizer, signed, from the
  /// running coordinator, and trains with it; its counts change nothing and it is named nowhere as a contributor.
  /// The rounds wait for all three nodes (min_nodes = 3), so c's taking part does not race the rounds' pace.
  @Test func aNodeThatStartsAfterThePhaseGetsTheFixedVocabulary() throws {
    let h = try Harness(nodes: [("a", ["de"]), ("b", ["fr"]), ("c", ["pl"])], rounds: 16, innerSteps: 30, quorum: 1.0, deadline: 20, minNodes: 3,
                        extra: "\n[tokenizer]\nfederated = true\nvocab_size = 400\nbalance = \"bytes\"\nmin_count = 1\nmin_documents = 1\nphase_seconds = 4")
    defer { h.cleanup() }
    let f = h.dir + "/federation.toml"
    try String(contentsOfFile: f, encoding: .utf8).replacingOccurrences(of: "tokenizer = \"tokenizer.json\"", with: "tokenizer = \"federated/tokenizer.json\"")
      .replacingOccurrences(of: "eval_data = [\"data\"]", with: "")
      .write(toFile: f, atomically: true, encoding: .utf8)
    // c keeps its tokenizer elsewhere (its own copy of federation.toml): in this one directory it would otherwise
    // find the file a and b saved.
    try String(contentsOfFile: f, encoding: .utf8).replacingOccurrences(of: "federated/tokenizer.json", with: "federated-c/tokenizer.json")
      .write(toFile: h.dir + "/federation-c.toml", atomically: true, encoding: .utf8)
    try String(contentsOfFile: h.dir + "/c.toml", encoding: .utf8).replacingOccurrences(of: "federation = \"federation.toml\"", with: "federation = \"federation-c.toml\"")
      .write(toFile: h.dir + "/c.toml", atomically: true, encoding: .utf8)
    // The phase learns from a's and b's tables alone: what BPETrainer learns from their text.
    var direct = BPETrainer()
    for l in ["de", "fr"] { direct.addLanguage(l, texts: [try String(contentsOfFile: h.dir + "/data/\(l)/train.txt", encoding: .utf8)]) }
    let union = try direct.train(vocabSize: 400).jsonData()
    let coord = try h.coordinator()
    let early = try ["a", "b"].map { try h.node($0) }
    // c starts as soon as the coordinator has learned the vocabulary (bounded wait): its first tables may reach the
    // coordinator between the phase's socket and the rounds' and be lost, and then it sends them again.
    #expect(waitUntil(60) { h.read("coordinator.log").contains("learned") }, "\(h.read("coordinator.log"))")
    #expect(h.read("coordinator.log").contains("learned"), "\(h.read("coordinator.log"))")
    let c = try h.node("c")
    #expect(h.wait(coord, seconds: 180) && coord.terminationStatus == 0, "\(h.read("coordinator.log"))")
    for p in early + [c] { _ = h.wait(p, seconds: 30) }
    let learned = try Data(contentsOf: URL(fileURLWithPath: h.dir + "/federated/tokenizer.json"))
    #expect(learned == union, "the vocabulary is the early nodes' alone")
    #expect((try? Data(contentsOf: URL(fileURLWithPath: h.dir + "/federated-c/tokenizer.json"))) == learned, "\(h.read("c.log"))")
    let log = h.read("coordinator.log"), cl = h.read("c.log")
    #expect(log.contains("c asked for the federation's tokenizer"), "\(log)")
    #expect(cl.contains("saved to") && cl.contains("signed by the coordinator"), "\(cl)")
    // c trained with it: at least one round's update from c was folded in.
    #expect(h.rows().contains { $0.joined(separator: " ").contains("3/3") }, "\(h.rows())")
    let summary = try String(contentsOfFile: h.dir + "/coordinator/vocabulary.json", encoding: .utf8)
    #expect(!summary.contains("\"name\":\"c\"") && !summary.contains("\"pl\""), "\(summary)")
  }
}
