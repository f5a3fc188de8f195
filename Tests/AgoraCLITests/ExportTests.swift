import AgoraRegistry
import AgoraHarness
import AgoraTestSupport
import Foundation
import Testing

/// `agora export` of a version a real federation made, loaded by Hugging Face transformers.
@Suite(.serialized) struct ExportTests {
  /// An exported version is a directory transformers loads as GPT2LMHeadModel (or, from a LLaMA federation,
  /// LlamaForCausalLM) and generates from, with a model card and a training-data summary naming every contributor
  /// and language. The LLaMA federation runs end to end through real processes and lowers bits/byte.
  @Test(arguments: [("gpt2", "GPT2LMHeadModel"), ("llama", "LlamaForCausalLM")])
  func exportLoadsInTransformersWithATrainingDataSummary(architecture: String, loaded: String) throws {
    let h = try Harness(nodes: [("north", ["de", "sv"]), ("south", ["it"])], rounds: 2, innerSteps: 5, architecture: architecture)
    defer { h.cleanup() }
    let c = try h.coordinator()
    let nodes = try h.nodes.map { try h.node($0) }
    #expect(h.wait(c, seconds: 120) && c.terminationStatus == 0)
    for n in nodes { _ = h.wait(n, seconds: 15) }
    let table = h.table()
    #expect(table.count >= 2 && table.last!.1 < table.first!.1, "bits/byte falls over the rounds: \(table)")
    let out = h.dir + "/export"
    let (status, text) = try h.run(["export", "2", "--config", h.dir + "/coordinator.toml", "--out", out])
    #expect(status == 0 && text.contains("signature valid"), "\(text)")
    for f in ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md", "training_data.json"] {
      #expect(FileManager.default.fileExists(atPath: out + "/" + f), "\(f) written")
    }
    let summary = try JSONDecoder().decode(TrainingDataSummary.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/training_data.json")))
    #expect(Set(summary.contributors.map(\.name)) == ["north", "south"])
    #expect(Set(summary.tokensPerLanguage.keys) == ["de", "sv", "it"])
    #expect(summary.rounds == [1, 2] && summary.tokens == summary.tokensPerLanguage.values.reduce(0, +))
    #expect(summary.contributors.allSatisfy { $0.seconds > 0 && $0.steps == 10 }, "CPU-seconds and steps reported by the nodes")
    #expect(summary.contributors.first { $0.name == "north" }.map { Set($0.tokensPerLanguage.keys) == ["de", "sv"] } == true)
    let card = try String(contentsOfFile: out + "/README.md", encoding: .utf8)
    #expect(card.contains("north") && card.contains("Training data") && card.contains("signature valid") && card.contains(loaded))
    // transformers loads it and generates (the Python environment comes from scripts/setup --python).
    let python = ProcessInfo.processInfo.environment["AGORA_PYTHON"] ?? repoRoot + "/.venv/bin/python"
    try #require(FileManager.default.isExecutableFile(atPath: python), "no Python environment at \(python): run scripts/setup --python")
    let (checked, outText) = try runProcess(python, [repoRoot + "/scripts/export_check.py", out])
    #expect(checked == 0, "\(outText)")
    #expect(outText.contains("\"loaded\": \"\(loaded)\""), "\(outText)")
    // Sharded (issue 37: a 1B model's 4 GB go out in shards): the same version at 100 KB a shard is shards and an
    // index, which transformers loads to the same tensors, Agora's import reads back, and `agora generate` runs.
    let sharded = h.dir + "/export-sharded"
    let (ss, st) = try h.run(["export", "2", "--config", h.dir + "/coordinator.toml", "--out", sharded, "--max-shard-size", "100KB"])
    #expect(ss == 0, "\(st)")
    let files = try FileManager.default.contentsOfDirectory(atPath: sharded)
    let shards = files.filter { $0.hasPrefix("model-") && $0.hasSuffix(".safetensors") }
    #expect(shards.count >= 3 && files.contains("model.safetensors.index.json") && !files.contains("model.safetensors"), "\(files)")
    // Each shard holds at most 100 KB of weights, or one tensor larger than that alone (and its header).
    let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: sharded + "/model.safetensors.index.json"))) as! [String: Any]
    let map = index["weight_map"] as! [String: String]
    for f in shards {
      let size = (try FileManager.default.attributesOfItem(atPath: sharded + "/" + f)[.size] as? Int) ?? .max
      let tensors = map.values.filter { $0 == f }.count
      #expect(tensors >= 1 && (size <= 100_000 + 4_096 || tensors == 1), "\(f): \(size) octets, \(tensors) tensors")
    }
    let (same, sameText) = try runProcess(python, [repoRoot + "/scripts/export_check.py", sharded, out])
    #expect(same == 0 && sameText.contains("\"same_tensors\""), "\(sameText)")
    let (imported, importText) = try h.run(["model", "import", sharded, "--out", h.dir + "/reimported"])
    #expect(imported == 0, "\(importText)")
    let (generated, generateText) = try h.run(["generate", "--model", sharded, "--prompt", "Die Datei", "--max-new-tokens", "4", "--seed", "1"])
    #expect(generated == 0, "\(generateText)")
    #expect((try? h.run(["export", "2", "--config", h.dir + "/coordinator.toml", "--out", sharded, "--max-shard-size", "0"]).0) != 0, "a size of 0 is refused")
  }
}
