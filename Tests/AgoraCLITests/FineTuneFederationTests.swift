import AgoraHarness
import AgoraTestSupport
import Foundation
import Testing

/// A fine-tuning federation (issue #34, `[finetune]`): a LLaMA base that transformers makes is imported, and two
/// institutions instruction-tune it with LoRA on their own chat data through a real coordinator. Each version is an
/// adapter (the version blob is peft's adapter_model.safetensors, naming the base's hash); updates carry only the
/// adapters' change; the coordinator scores them on its validation conversations; `agora show` names base and
/// adapter; `agora export` writes the merged model and `adapter/`, which peft loads onto the base to the same logits.
@Suite(.serialized) struct FineTuneFederationTests {
  static let python = ProcessInfo.processInfo.environment["AGORA_PYTHON"] ?? repoRoot + "/.venv/bin/python"
  let agora = repoRoot + "/.build/release/agora"

  /// data/<lang>/{train,valid}.jsonl beside the harness's text: "repeat W" → "W W W" for words of the language's
  /// text (validation asks about words training does not).
  static func chatData(_ h: Harness, languages: [String]) throws {
    for l in languages {
      let text = try String(contentsOfFile: h.dir + "/data/\(l)/train.txt", encoding: .utf8)
      var seen = Set<String>(), words: [String] = []
      for w in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) where w.count >= 3 && w.allSatisfy(\.isLetter) && seen.insert(String(w)).inserted {
        words.append(String(w))
      }
      func line(_ w: String) -> String {
        #"{"messages": [{"role": "user", "content": "repeat \#(w)"}, {"role": "assistant", "content": "\#(w) \#(w) \#(w)"}]}"#
      }
      let train = words.prefix(200).map(line), valid = words.dropFirst(200).prefix(24).map(line)
      try (train.joined(separator: "\n") + "\n").write(toFile: h.dir + "/data/\(l)/train.jsonl", atomically: true, encoding: .utf8)
      try (valid.joined(separator: "\n") + "\n").write(toFile: h.dir + "/data/\(l)/valid.jsonl", atomically: true, encoding: .utf8)
    }
  }

  /// A LLaMA base transformers makes (random initialisation), imported into `work/base`.
  func base(_ work: String) throws {
    try #require(FileManager.default.isExecutableFile(atPath: Self.python), "no Python environment at \(Self.python): run scripts/setup --python")
    let (made, out) = try runProcess(Self.python, [repoRoot + "/scripts/hf_model.py", "make", "llama", work + "/hf"])
    try #require(made == 0, "\(out)")
    let (imported, text) = try runProcess(agora, ["model", "import", work + "/hf", "--out", work + "/base"])
    try #require(imported == 0, "\(text)")
  }

  static let adapter = "[finetune]\nmethod = \"lora\"\nrank = 4\nalpha = 8\ntemplate = \"chatml\""

  @Test func twoInstitutionsTuneAnAdapterThatPeftLoads() throws {
    let work = NSTemporaryDirectory() + "agora-ftfed-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: work) }
    try base(work)
    let h = try Harness(nodes: [("north", ["de"]), ("south", ["fr"])], rounds: 2, innerSteps: 12, extra: Self.adapter, pilot: work + "/base")
    defer { if ProcessInfo.processInfo.environment["AGORA_KEEP"] == nil { h.cleanup() } else { print("kept " + h.dir) } }
    try Self.chatData(h, languages: ["de", "fr"])
    let c = try h.coordinator()
    let nodes = try h.nodes.map { try h.node($0) }
    #expect(h.wait(c, seconds: 240) && c.terminationStatus == 0, "coordinator: \(String(h.read("coordinator.log").suffix(2500)))")
    for n in nodes { _ = h.wait(n, seconds: 20) }
    let log = h.read("coordinator.log")
    #expect(log.contains("version 0: LoRA r 4, α 8 on q_proj, k_proj, v_proj, o_proj (chatml) on the base"), "\(String(log.prefix(3000)))")
    // Both rounds took both updates, each scored on the coordinator's validation conversations of its language.
    for r in [1, 2] {
      let accepted = h.events().filter { $0["event"] as? String == "update_accepted" && $0["round"] as? Int == r }
      #expect(accepted.count == 2, "round \(r): \(accepted.count) updates accepted\n\(String(log.suffix(2500)))")
    }
    #expect(log.contains("scored on de:") && log.contains("scored on fr:"), "\(String(log.suffix(2500)))")

    // An update is the adapters' change only: a small fraction of the model's bytes.
    let sent = h.events(log: "north.log").filter { $0["event"] as? String == "update_sent" }.compactMap { $0["bytes"] as? Int }
    let (shown, show) = try h.run(["show", "2", "--config", h.dir + "/coordinator.toml"])
    #expect(shown == 0 && show.contains("fine-tune  lora r=4 alpha=8.0") && show.contains("each version is an adapter on the base"), "\(show)")
    let baseLine = show.split(separator: "\n").first { $0.hasPrefix("base model") } ?? ""
    let count = baseLine.split(separator: ",").first { $0.hasSuffix(" parameters") }?.split(separator: " ").first
    let modelParameters = try #require(count.flatMap { Int($0) }, "\(show)")
    #expect(!sent.isEmpty && sent.allSatisfy { $0 < modelParameters / 8 }, "update bytes \(sent) for a model of \(modelParameters) parameters")

    // The version blob is peft's adapter file: the adapters' tensors under peft's names, and the base's hash.
    let export = h.dir + "/export"
    let (exported, etext) = try h.run(["export", "2", "--config", h.dir + "/coordinator.toml", "--out", export])
    #expect(exported == 0, "\(etext)")
    let fm = FileManager.default
    for f in ["config.json", "model.safetensors", "tokenizer_config.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "README.md"] {
      #expect(fm.fileExists(atPath: export + "/" + f), "\(f) written")
    }
    let card = try String(contentsOfFile: export + "/README.md", encoding: .utf8)
    #expect(card.contains("fine-tuned on the members' chat data") && card.contains("This version is a LoRA adapter"), "\(String(card.prefix(1500)))")

    // agora gc frees old versions' blobs but keeps the base every adapter version is merged into.
    let (collected, gtext) = try h.run(["gc", "--keep-last", "1", "--config", h.dir + "/coordinator.toml"])
    #expect(collected == 0 && gtext.contains("freed 2 versions"), "\(gtext)")
    let (again, atext) = try h.run(["export", "2", "--config", h.dir + "/coordinator.toml", "--out", h.dir + "/export-after-gc"])
    #expect(again == 0 && fm.fileExists(atPath: h.dir + "/export-after-gc/adapter/adapter_model.safetensors"), "\(atext)")

    // Chat generation from the version (its template found in the registry) and from the export: the same tokens.
    let args = ["--chat", "--prompt", "repeat Haus", "--temperature", "0", "--max-new-tokens", "12", "--json"]
    let (g1, fromVersion) = try h.run(["generate", "--version", "2", "--config", h.dir + "/coordinator.toml"] + args)
    let (g2, fromExport) = try h.run(["generate", "--model", export] + args)
    func tokens(_ s: String) -> [Int]? {
      s.split(separator: "\n").last { $0.hasPrefix("{") }.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }?["tokens"] as? [Int]
    }
    #expect(g1 == 0 && g2 == 0 && tokens(fromVersion) != nil && tokens(fromVersion) == tokens(fromExport), "\(fromVersion)\n\(fromExport)")

    // peft loads the adapter onto the base; its logits equal the merged model's, and the adapter changed them.
    let check = try peftLogits(python: Self.python, base: work + "/base", adapter: export + "/adapter", merged: export, tokens: [1, 2, 3, 4, 5, 6], scratch: work)
    let diff = try #require(check.peftVsMerged, "\(check.output)"), effect = try #require(check.adapterEffect, "\(check.output)")
    #expect(diff <= 1e-4, "peft-loaded vs merged logits differ by \(diff)")
    #expect(effect > 1e-3, "the federation's adapter changes the logits (\(effect))")
  }

  /// Under secure aggregation with client-level differential privacy, the coordinator sees only the masked sum of
  /// the adapters' clipped, noised changes, and the federation still makes its versions; a node set to another
  /// rank is refused at JOIN (its model hash is another adapter's).
  @Test func adaptersUnderSecureAggregationAndPrivacyAndAnotherRankIsRefused() throws {
    let work = NSTemporaryDirectory() + "agora-ftfed-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: work) }
    try base(work)
    let h = try Harness(nodes: [("north", ["de"]), ("south", ["fr"])], rounds: 2, innerSteps: 8, quorum: 1,
                        extra: "secure_aggregation = true\ndp_clip = 1.0\ndp_noise_multiplier = 0.05\n" + Self.adapter, pilot: work + "/base")
    defer { h.cleanup() }
    let f = h.dir + "/federation.toml"
    let text = try String(contentsOfFile: f, encoding: .utf8)
    try text.replacingOccurrences(of: "coordinator_card = \"keys/coordinator/card.toml\"", with: "coordinator_card = \"keys/coordinator/card.toml\"\nmembers = \"keys/enrolled\"")
      .write(toFile: f, atomically: true, encoding: .utf8)
    try Self.chatData(h, languages: ["de", "fr"])
    let c = try h.coordinator()
    // Another rank first: refused at JOIN, naming the adapter's settings.
    try String(contentsOfFile: f, encoding: .utf8).replacingOccurrences(of: "rank = 4", with: "rank = 8").write(toFile: h.dir + "/other.toml", atomically: true, encoding: .utf8)
    let node = try String(contentsOfFile: h.dir + "/north.toml", encoding: .utf8)
    try node.replacingOccurrences(of: "federation = \"federation.toml\"", with: "federation = \"other.toml\"").write(toFile: h.dir + "/north-other.toml", atomically: true, encoding: .utf8)
    let (status, out) = try h.run(["node", "--config", h.dir + "/north-other.toml"])
    #expect(status != 0 && out.contains("adapter settings"), "\(out)")

    let nodes = try h.nodes.map { try h.node($0) }
    #expect(h.wait(c, seconds: 240) && c.terminationStatus == 0, "coordinator: \(String(h.read("coordinator.log").suffix(2500)))")
    for n in nodes { _ = h.wait(n, seconds: 20) }
    let log = h.read("coordinator.log")
    #expect(log.contains("bits per byte per language, version 0 → version 2"), "\(String(log.suffix(2500)))")
    #expect(h.events(log: "north.log").contains { $0["event"] as? String == "update_sent" && $0["masked"] as? Bool == true }, "\(String(h.read("north.log").suffix(1500)))")
    // ε is recorded for the adapter versions as for whole-model ones.
    let (shown, show) = try h.run(["show", "2", "--config", h.dir + "/coordinator.toml"])
    #expect(shown == 0 && show.contains("differential privacy"), "\(show)")
  }
}
