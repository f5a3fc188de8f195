@testable import AgoraModel
import AgoraTestSupport
import Foundation
import Testing

@Suite struct CheckpointTests {
  func tempDir() throws -> String { try temporaryDirectory("agora-ckpt") }

  func tinyModel(seed: UInt64 = 1, preset: String = "tiny") throws -> (GPT, Tokenizer) {
    var t = BPETrainer()
    t.addLanguage("en", texts: ["hello world, hello there, the world is wide and the sea is deep\n"])
    let tok = try t.train(vocabSize: 300)
    var c = try GPTConfig.preset(preset)
    c.vocabSize = tok.vocabSize
    return (try GPT(config: c, batch: 1, sequence: 8, seed: seed), tok)
  }

  @Test func saveAndLoadRoundTripsBitExactly() throws {
    let dir = try tempDir()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (m, tok) = try tinyModel()
    try Checkpoint.saveModel(m, tokenizer: tok, to: dir)
    let (back, tok2) = try Checkpoint.load(dir: dir, batch: 1, sequence: 8)
    #expect(back.parameters.array == m.parameters.array)
    #expect(tok2.vocabSize == tok.vocabSize)
    // The file is safetensors with HF GPT-2 names.
    let st = try SafeTensors(path: dir + "/model.safetensors")
    #expect(st.entries["h.0.attn.c_attn.weight"]?.shape == [64, 192])
    #expect(st.metadata["format"] == "pt")
  }

  /// A LLaMA checkpoint: LlamaForCausalLM names, `nn.Linear` shapes and config.json; it loads back bit-exactly,
  /// with the same shape, and a config.json that describes something else is a typed error naming the file.
  @Test func llamaCheckpointsRoundTripAndBadConfigsAreTypedErrors() throws {
    let dir = try tempDir()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (m, tok) = try tinyModel(preset: "llama-tiny")
    try Checkpoint.saveModel(m, tokenizer: tok, to: dir)
    let (back, _) = try Checkpoint.load(dir: dir, batch: 1, sequence: 8)
    #expect(back.config == m.config && back.parameters.array == m.parameters.array)
    let st = try SafeTensors(path: dir + "/model.safetensors")
    #expect(st.entries["model.layers.0.self_attn.k_proj.weight"]?.shape == [32, 64], "2 key/value heads of 16")
    #expect(st.entries["lm_head.weight"]?.shape == [tok.vocabSize, 64])
    #expect(st.metadata["agora.architecture"] == "llama heads=4 kv_heads=2 rope_theta=10000.0 rms_norm_eps=1e-05")
    let cfg = dir + "/config.json"
    let good = try String(contentsOfFile: cfg, encoding: .utf8)
    for (from, to, mentions) in [("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act"),
                                 ("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true", "tie_word_embeddings"),
                                 ("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3", "multiple of kvHeads"),
                                 ("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": -1", "normEps"),
                                 ("\"model_type\": \"llama\"", "\"model_type\": \"mistral\"", "model_type")] {
      #expect(good.contains(from), "config.json has \(from)")
      try good.replacingOccurrences(of: from, with: to).write(toFile: cfg, atomically: true, encoding: .utf8)
      do {
        _ = try Checkpoint.load(dir: dir, batch: 1, sequence: 8)
        Issue.record("a config with \(to) loaded")
      } catch let ModelError.file(path, problem) {
        #expect(path == cfg && problem.contains(mentions), "\(to): \(problem)")
      }
    }
  }

  /// Writes a damaged copy of `model.safetensors` and expects a `ModelError.file` naming it.
  func expectCorrupt(_ name: String, _ damage: (inout Data) -> Void, mentions: String) throws {
    let dir = try tempDir()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (m, tok) = try tinyModel()
    try Checkpoint.saveModel(m, tokenizer: tok, to: dir)
    let path = dir + "/model.safetensors"
    var d = try Data(contentsOf: URL(fileURLWithPath: path))
    damage(&d)
    try d.write(to: URL(fileURLWithPath: path))
    do {
      _ = try Checkpoint.load(dir: dir, batch: 1, sequence: 8)
      Issue.record("\(name): a damaged checkpoint loaded")
    } catch let ModelError.file(p, problem) {
      #expect(p == path, "\(name): error names \(p)")
      #expect(problem.contains(mentions), "\(name): \(problem)")
    }
  }

  @Test func corruptCheckpointsGiveTypedErrors() throws {
    try expectCorrupt("truncated", { $0 = $0.prefix($0.count - 100) }, mentions: "outside")
    try expectCorrupt("tiny", { $0 = $0.prefix(5) }, mentions: "shorter than")
    try expectCorrupt("huge header", { d in d.replaceSubrange(0..<8, with: [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]) }, mentions: "header length")
    try expectCorrupt("garbage header", { d in d.replaceSubrange(8..<16, with: Array("xxxxxxxx".utf8)) }, mentions: "JSON")
    try expectCorrupt("NaN weight", { d in
      let n = d.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
      d.replaceSubrange((8 + n)..<(8 + n + 4), with: [0x00, 0x00, 0xC0, 0x7F])
    }, mentions: "not finite")
  }

  @Test func mismatchedFilesAreRejected() throws {
    let dir = try tempDir()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (m, tok) = try tinyModel()
    try Checkpoint.saveModel(m, tokenizer: tok, to: dir)
    // A config for a wider model than the weights.
    let cfg = dir + "/config.json"
    let text = try String(contentsOfFile: cfg, encoding: .utf8).replacingOccurrences(of: "\"n_embd\": 64", with: "\"n_embd\": 128")
    try text.write(toFile: cfg, atomically: true, encoding: .utf8)
    #expect(throws: ModelError.file(path: dir + "/model.safetensors", problem: "tensor 'wte.weight' has shape [\(tok.vocabSize), 64], expected [\(tok.vocabSize), 128]")) {
      _ = try Checkpoint.load(dir: dir, batch: 1, sequence: 8)
    }
    // A tokenizer with another vocabulary.
    try Checkpoint.saveModel(m, tokenizer: tok, to: dir)
    var t = BPETrainer()
    t.addLanguage("x", texts: ["abcabcabc abc abd"])
    try (try t.train(vocabSize: 260)).save(to: dir + "/tokenizer.json")
    #expect(throws: ModelError.self) { _ = try Checkpoint.load(dir: dir, batch: 1, sequence: 8) }
    // A config that is not JSON.
    try "{\"n_embd\": ".write(toFile: cfg, atomically: true, encoding: .utf8)
    #expect(throws: ModelError.file(path: cfg, problem: "not a JSON object (corrupt or truncated?)")) {
      _ = try Checkpoint.load(dir: dir, batch: 1, sequence: 8)
    }
  }

  @Test func forwardRejectsOutOfRangeTokens() throws {
    let (m, _) = try tinyModel()
    #expect(throws: ModelError.self) { try m.forward(tokens: [Int32](repeating: 300, count: 8), targets: nil) }
    #expect(throws: ModelError.self) { try m.forward(tokens: [Int32](repeating: -1, count: 8), targets: nil) }
    #expect(throws: ModelError.self) { try m.forward(tokens: [1, 2], targets: nil) }
  }
}
