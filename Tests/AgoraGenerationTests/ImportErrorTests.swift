import AgoraImport
@testable import AgoraModel
import AgoraTensor
import AgoraTestSupport
import Foundation
import Testing

/// What an import refuses, and that a refused import leaves nothing behind: each case changes one thing of a
/// valid LLaMA checkpoint (written by Agora, so no Python is needed) and expects the error that names it.
@Suite struct ImportErrorTests {
  /// A valid checkpoint directory and a place for the output, in a fresh temporary directory.
  func fixture() throws -> (hf: String, out: String, root: String) {
    let root = NSTemporaryDirectory() + "agora-import-errors-\(UUID().uuidString)"
    var c = try GPTConfig.preset("llama-tiny")
    let tok = try Tokenizer(merges: [(97, 98), (256, 99)])
    c.vocabSize = tok.vocabSize
    c.channels = 48  // no preset has this width
    c.heads = 6
    c.kvHeads = 3
    let params = FloatBuffer(count: ParameterLayout(c).count)
    GPT.initialise(params, layout: ParameterLayout(c), seed: 2)
    try Checkpoint.save(parameters: params, config: c, tokenizer: tok, to: root + "/hf")
    return (root + "/hf", root + "/out", root)
  }

  func editConfig(_ dir: String, _ change: (inout [String: Any]) -> Void) throws {
    let path = dir + "/config.json"
    var o = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
    change(&o)
    try JSONSerialization.data(withJSONObject: o).write(to: URL(fileURLWithPath: path))
  }

  /// Rewrites model.safetensors with `change` applied to its (name → (shape, values)) tensors.
  func editTensors(_ dir: String, _ change: (inout [String: ([Int], [Float])]) -> Void) throws {
    let path = dir + "/model.safetensors"
    let st = try SafeTensors(path: path)
    var t: [String: ([Int], [Float])] = [:]
    for (name, e) in st.entries { t[name] = (e.shape, try st.floats(name)) }
    change(&t)
    let names = t.keys.sorted()
    let buffers = names.map { FloatBuffer(t[$0]!.1) }
    try withExtendedLifetime(buffers) {
      try SafeTensors.write(names.indices.map { SafeTensors.Output(name: names[$0], shape: t[names[$0]]!.0, pointer: UnsafeRawPointer(buffers[$0].pointer)) }, to: path)
    }
  }

  /// Imports and expects `expected`; the output and any temporary directory must not exist afterwards.
  func refuses(_ f: (hf: String, out: String, root: String), _ expected: (ImportError) -> Bool, _ what: Comment) {
    do {
      try HuggingFaceImport.run(f.hf, out: f.out)
      Issue.record("imported although \(what)")
    } catch let e as ImportError {
      #expect(expected(e), "\(what): got \(e)")
    } catch { Issue.record("\(what): not an ImportError: \(error)") }
    #expect(!FileManager.default.fileExists(atPath: f.out), "half-imported: \(f.out) exists")
    let left = (try? FileManager.default.contentsOfDirectory(atPath: f.root)) ?? []
    #expect(left == ["hf"], "left behind: \(left)")
  }

  @Test func theValidFixtureImports() throws {
    let f = try fixture()
    defer { try? FileManager.default.removeItem(atPath: f.root) }
    let m = try HuggingFaceImport.run(f.hf, out: f.out)
    #expect(m.config.channels == 48 && m.config.kvHeads == 3)
    #expect(try HuggingFaceImport.base(of: f.out) == m.base)
    // Importing again over an existing output is refused and changes nothing.
    let before = try Data(contentsOf: URL(fileURLWithPath: f.out + "/model.safetensors"))
    #expect(throws: ImportError.output(path: f.out, problem: "already exists; nothing was written")) { try HuggingFaceImport.run(f.hf, out: f.out) }
    #expect(try Data(contentsOf: URL(fileURLWithPath: f.out + "/model.safetensors")) == before)
  }

  @Test func unsupportedConfigFieldsAreNamed() throws {
    let cases: [(String, (inout [String: Any]) -> Void)] = [
      ("model_type", { $0["model_type"] = "mistral" }),
      ("architectures", { $0["architectures"] = ["LlamaForSequenceClassification"] }),
      ("hidden_act", { $0["hidden_act"] = "gelu" }),
      ("rope_scaling", { $0["rope_scaling"] = ["rope_type": "linear", "factor": 2.0] }),
      ("rope_parameters", { $0["rope_parameters"] = ["rope_type": "yarn", "rope_theta": 10000.0] }),
      ("attention_bias", { $0["attention_bias"] = true }),
      ("head_dim", { $0["head_dim"] = 16 }),
      ("quantization_config", { $0["quantization_config"] = ["quant_method": "gptq"] }),
      ("vocab_size", { $0["vocab_size"] = 300 }),
      ("num_hidden_layers", { $0.removeValue(forKey: "num_hidden_layers") }),
    ]
    for (field, change) in cases {
      let f = try fixture()
      defer { try? FileManager.default.removeItem(atPath: f.root) }
      try editConfig(f.hf, change)
      refuses(f, { if case .config(let got, _) = $0 { return got == field || got.contains(field) } else if case .tensor = $0 { return field == "vocab_size" } else { return false } },
              "config field \(field)")
    }
  }

  @Test func missingExtraMisshapenAndNonFiniteTensorsAreNamed() throws {
    let q = "model.layers.1.self_attn.q_proj.weight"
    let cases: [(String, String, (inout [String: ([Int], [Float])]) -> Void)] = [
      ("missing", q, { $0.removeValue(forKey: q) }),
      ("unexpected", "model.layers.0.self_attn.q_norm.weight", { $0["model.layers.0.self_attn.q_norm.weight"] = ([8], [Float](repeating: 1, count: 8)) }),
      ("shape", q, { $0[q] = ([48, 47], [Float](repeating: 0, count: 48 * 47)) }),
      ("value", "model.norm.weight", { $0["model.norm.weight"]!.1[3] = .nan }),
    ]
    for (problem, name, change) in cases {
      let f = try fixture()
      defer { try? FileManager.default.removeItem(atPath: f.root) }
      try editTensors(f.hf, change)
      refuses(f, { if case .tensor(let n, let p) = $0 { return n == name && p.contains(problem) } else { return false } }, "tensor \(name) \(problem)")
    }
  }

  @Test func truncatedAndMissingFilesAreNamed() throws {
    let f = try fixture()
    defer { try? FileManager.default.removeItem(atPath: f.root) }
    let path = f.hf + "/model.safetensors"
    let d = try Data(contentsOf: URL(fileURLWithPath: path))
    try d.prefix(d.count - 100).write(to: URL(fileURLWithPath: path))
    refuses(f, { if case .file(let p, _) = $0 { return p == path } else { return false } }, "a truncated model.safetensors")
    try FileManager.default.removeItem(atPath: path)
    refuses(f, { if case .file(let p, let why) = $0 { return p == path && why.hasPrefix("missing") } else { return false } }, "no weights")
    try d.write(to: URL(fileURLWithPath: path))
    try Data("{\"weight_map\": {\"lm_head.weight\": \"model-2.safetensors\"}}".utf8).write(to: URL(fileURLWithPath: f.hf + "/model.safetensors.index.json"))
    refuses(f, { if case .file(let p, _) = $0 { return p.hasSuffix("model-2.safetensors") } else { return false } }, "an index naming a missing shard")
    try FileManager.default.removeItem(atPath: f.hf + "/model.safetensors.index.json")
    try FileManager.default.removeItem(atPath: f.hf + "/tokenizer.json")
    refuses(f, { if case .file(let p, _) = $0 { return p.hasSuffix("tokenizer.json") } else { return false } }, "no tokenizer")
  }

  @Test func tokenizersAgoraCannotReproduceAreRefusedByPart() throws {
    let f = try fixture()
    defer { try? FileManager.default.removeItem(atPath: f.root) }
    let path = f.hf + "/tokenizer.json"
    let good = try Data(contentsOf: URL(fileURLWithPath: path))
    for (part, edit) in [("pre_tokenizer", "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"▁\"}"),
                         ("normalizer", "\"normalizer\":{\"type\":\"NFKC\"}"),
                         ("byte_fallback", "\"byte_fallback\":true")] {
      var s = String(decoding: good, as: UTF8.self)
      let key = "\"\(part)\":"
      let start = s.range(of: key)!
      // Replace the value after the key: up to the next top-level comma of this small document's known layout.
      let valueEnd = part == "pre_tokenizer" ? s.range(of: ",\"post_processor\"")!.lowerBound
        : part == "normalizer" ? s.range(of: ",\"pre_tokenizer\"")!.lowerBound : s.range(of: ",\"ignore_merges\"")!.lowerBound
      s.replaceSubrange(start.lowerBound..<valueEnd, with: edit)
      try Data(s.utf8).write(to: URL(fileURLWithPath: path))
      refuses(f, { if case .file(let p, let why) = $0 { return p == path && why.contains(part) } else { return false } }, "tokenizer part \(part)")
    }
  }
}
