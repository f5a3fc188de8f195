import AgoraHarness
import AgoraTestSupport
import Foundation
import Testing

/// A federation that starts from a pilot checkpoint: a LLaMA model transformers makes (random initialisation,
/// a shape no preset has, its own tokenizer) is imported, named as `model.init`, trained for a round by a real
/// coordinator and node, exported, and loaded by transformers; its base is recorded and named. A node holding
/// another copy of the checkpoint is refused.
@Suite(.serialized) struct PilotModelTests {
  static let python = ProcessInfo.processInfo.environment["AGORA_PYTHON"] ?? repoRoot + "/.venv/bin/python"

  @Test func importOneRoundExportAndTransformersLoadsIt() throws {
    try #require(FileManager.default.isExecutableFile(atPath: Self.python), "no Python environment at \(Self.python): run scripts/setup --python")
    let work = NSTemporaryDirectory() + "agora-pilot-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: work) }
    let (made, out) = try runProcess(Self.python, [repoRoot + "/scripts/hf_model.py", "make", "llama", work + "/hf", "--dtype", "bf16", "--tied"])
    try #require(made == 0, "\(out)")
    let agora = repoRoot + "/.build/release/agora"
    let (imported, text) = try runProcess(agora, ["model", "import", work + "/hf", "--out", work + "/pilot"])
    #expect(imported == 0 && text.contains("LlamaForCausalLM") && text.contains("licence apache-2.0"), "\(text)")

    let h = try Harness(nodes: [("north", ["de", "sv"])], rounds: 1, innerSteps: 5, pilot: work + "/pilot")
    defer { h.cleanup() }
    let c = try h.coordinator()
    let n = try h.node("north")
    #expect(h.wait(c, seconds: 180) && c.terminationStatus == 0, "coordinator: \(h.read("coordinator.log").suffix(1500))")
    _ = h.wait(n, seconds: 15)
    #expect(h.read("coordinator.log").contains("version 0: the pilot checkpoint"))
    let (shown, show) = try h.run(["show", "1", "--config", h.dir + "/coordinator.toml"])
    #expect(shown == 0 && show.contains("base model hf: LlamaForCausalLM") && show.contains("licence apache-2.0") && show.contains("checkpoint blake3:"), "\(show)")
    let export = h.dir + "/export"
    let (exported, etext) = try h.run(["export", "1", "--config", h.dir + "/coordinator.toml", "--out", export])
    #expect(exported == 0, "\(etext)")
    let card = try String(contentsOfFile: export + "/README.md", encoding: .utf8)
    #expect(card.contains("base_model: \"hf\"") && card.contains("Base model: hf (LlamaForCausalLM, licence apache-2.0)"), "\(card.prefix(1200))")
    let (checked, ctext) = try runProcess(Self.python, [repoRoot + "/scripts/export_check.py", export])
    #expect(checked == 0 && ctext.contains("\"loaded\": \"LlamaForCausalLM\""), "\(ctext)")
    // The round trained the pilot: version 1 is not version 0.
    let (g0, out0) = try h.run(["generate", "--version", "0", "--config", h.dir + "/coordinator.toml", "--prompt", "Die", "--temperature", "0", "--max-new-tokens", "12", "--json"])
    let (g1, out1) = try h.run(["generate", "--version", "1", "--config", h.dir + "/coordinator.toml", "--prompt", "Die", "--temperature", "0", "--max-new-tokens", "12", "--json"])
    #expect(g0 == 0 && g1 == 0 && out0.contains("\"tokens\"") && out1.contains("\"tokens\""), "\(out0)\n\(out1)")
  }

  @Test func aNodeWithAnotherCopyOfTheCheckpointIsRefused() throws {
    try #require(FileManager.default.isExecutableFile(atPath: Self.python), "no Python environment at \(Self.python): run scripts/setup --python")
    let work = NSTemporaryDirectory() + "agora-pilot-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: work) }
    let (made, out) = try runProcess(Self.python, [repoRoot + "/scripts/hf_model.py", "make", "gpt2", work + "/hf"])
    try #require(made == 0, "\(out)")
    // The node's copy differs by one config value that changes nothing the shape says (a bookkeeping field).
    try FileManager.default.copyItem(atPath: work + "/hf", toPath: work + "/copy")
    let cfg = work + "/copy/config.json"
    var o = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: cfg))) as! [String: Any]
    o["initializer_range"] = 0.05
    try JSONSerialization.data(withJSONObject: o).write(to: URL(fileURLWithPath: cfg))
    let h = try Harness(nodes: [("north", ["de"])], rounds: 1, innerSteps: 3, deadline: 20, pilot: work + "/hf")
    defer { h.cleanup() }
    let fed = try String(contentsOfFile: h.dir + "/federation.toml", encoding: .utf8)
    try fed.replacingOccurrences(of: work + "/hf", with: work + "/copy").write(toFile: h.dir + "/federation-copy.toml", atomically: true, encoding: .utf8)
    let node = try String(contentsOfFile: h.dir + "/north.toml", encoding: .utf8)
    try node.replacingOccurrences(of: "federation.toml", with: "federation-copy.toml").write(toFile: h.dir + "/north.toml", atomically: true, encoding: .utf8)
    let c = try h.coordinator()
    defer { c.terminate() }
    let n = try h.node("north")
    #expect(h.wait(n, seconds: 60), "the node did not stop")
    #expect(n.terminationStatus != 0)
    let refused = h.events(log: "north.log").first { $0["event"] as? String == "refused" }?["reason"] as? String ?? ""
    #expect(refused.contains("model (shape, and base checkpoint and adapter settings if any)"), "\(h.read("north.log").suffix(800))")
  }
}
