import AgoraModel
import AgoraStorage
import AgoraTensor
import AgoraText
import Foundation

/// A LoRA adapter directory as peft writes and reads it (`PeftModel.from_pretrained(base, DIR)`):
/// `adapter_config.json` and `adapter_model.safetensors` (A and B of every module, binary32, peft's names).
public enum LoRACheckpoint {
  public static let configFile = "adapter_config.json"
  public static let weightsFile = "adapter_model.safetensors"

  /// peft's `adapter_config.json` for adapters on `architecture` (GPT-2's Conv1D layers need `fan_in_fan_out`).
  public static func configJSON(_ s: LoRASettings, architecture: GPTConfig.Architecture, baseModel: String?) -> Data {
    let targets = s.targets.map(jsonString).joined(separator: ", ")
    let text = """
    {
      "peft_type": "LORA",
      "task_type": "CAUSAL_LM",
      "base_model_name_or_path": \(baseModel.map(jsonString) ?? "null"),
      "r": \(s.rank),
      "lora_alpha": \(jsonNumber(s.alpha)),
      "lora_dropout": \(jsonNumber(s.dropout)),
      "target_modules": [\(targets)],
      "fan_in_fan_out": \(architecture == .gpt2),
      "bias": "none",
      "use_rslora": false,
      "use_dora": false,
      "modules_to_save": null,
      "trainable_token_indices": \(tokenIndices(s, architecture)),
      "init_lora_weights": true,
      "inference_mode": true
    }

    """
    return Data(text.utf8)
  }

  /// Writes `adapters` to `dir` (each file atomically).
  public static func save(_ adapters: LoRAAdapters, to dir: String, baseModel: String?, metadata: [String: String] = [:]) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let p = UnsafeRawPointer(adapters.parameters.pointer)
    let outs = adapters.layout.tensors.map { SafeTensors.Output(name: $0.name, shape: $0.shape, pointer: p + 4 * $0.offset) }
    var meta = metadata
    meta["format"] = "pt"
    try SafeTensors.write(outs, metadata: meta, to: (dir as NSString).appendingPathComponent(weightsFile))
    try AtomicFile.write(configJSON(adapters.layout.settings, architecture: adapters.layout.config.architecture, baseModel: baseModel),
                         to: (dir as NSString).appendingPathComponent(configFile))
  }

  /// The settings of a peft LoRA adapter directory, refusing by name what Agora's adapters do not compute
  /// (rsLoRA, DoRA, trained biases, extra trained modules, per-layer ranks, layer subsets, regular expressions).
  public static func readSettings(_ dir: String, architecture: GPTConfig.Architecture) throws -> LoRASettings {
    let path = (dir as NSString).appendingPathComponent(configFile)
    guard let d = FileManager.default.contents(atPath: path) else { throw ModelError.file(path: path, problem: "cannot read the file") }
    guard let o = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] else {
      throw ModelError.file(path: path, problem: "not a JSON object")
    }
    func fail(_ s: String) -> ModelError { .file(path: path, problem: s) }
    guard (o["peft_type"] as? String)?.uppercased() == "LORA" else { throw fail("peft_type is \(o["peft_type"] ?? "missing"), not LORA") }
    guard let r = o["r"] as? Int else { throw fail("r (the rank) is missing or not an integer") }
    guard let alpha = (o["lora_alpha"] as? NSNumber)?.floatValue else { throw fail("lora_alpha is missing or not a number") }
    let dropout = (o["lora_dropout"] as? NSNumber)?.floatValue ?? 0
    for key in ["use_rslora", "use_dora", "lora_bias"] where (o[key] as? Bool) == true {
      throw fail("\(key) is true: Agora's adapters compute plain LoRA (α/r scaling, no magnitude vector, no bias)")
    }
    if let b = o["bias"] as? String, b != "none" { throw fail("bias is \"\(b)\": Agora's adapters train no biases") }
    for key in ["modules_to_save", "layers_to_transform", "layers_pattern"] {
      if let v = o[key], !(v is NSNull), !((v as? [Any])?.isEmpty ?? false) { throw fail("\(key) is set: Agora adapts whole models' blocks only") }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
      if let v = o[key] as? [String: Any], !v.isEmpty { throw fail("\(key) gives some modules their own rank or alpha: not supported") }
    }
    var tokens: [Int] = []
    if let list = o["trainable_token_indices"] as? [Int] {
      tokens = list
    } else if let map = o["trainable_token_indices"] as? [String: [Int]] {
      let embedding = architecture == .llama ? "embed_tokens" : "wte"
      for (k, v) in map where k != embedding && !(architecture == .llama && k == "lm_head") {
        throw fail("trainable_token_indices names \(k): Agora trains the rows of \(embedding)\(architecture == .llama ? " and lm_head" : "") only")
      }
      tokens = map[embedding] ?? []
      if architecture == .llama, (map["lm_head"] ?? []) != tokens {
        throw fail("trainable_token_indices gives lm_head other tokens than embed_tokens: Agora trains the same rows of both")
      }
    } else if let v = o["trainable_token_indices"], !(v is NSNull) {
      throw fail("trainable_token_indices is neither a list of ids nor a map of module names to ids")
    }
    var targets: [String]
    if let list = o["target_modules"] as? [String] {
      targets = list
    } else if let one = o["target_modules"] as? String, LoRASettings.modules(for: architecture).contains(one) {
      targets = [one]
    } else {
      throw fail("target_modules must be a list of module names (\(LoRASettings.modules(for: architecture).joined(separator: ", "))), not \(o["target_modules"] ?? "missing")")
    }
    // peft stores a set; keep the architecture's order so equal settings compare equal.
    let known = LoRASettings.modules(for: architecture)
    targets = known.filter(targets.contains) + targets.filter { !known.contains($0) }
    let s = LoRASettings(rank: r, alpha: alpha, dropout: dropout, targets: targets, tokens: tokens)
    do { try s.validate(for: architecture) } catch { throw fail("\(error)") }
    return s
  }

  /// Reads `dir`'s adapter weights into `adapters`, checking every name and shape and that each value is finite.
  public static func loadWeights(into adapters: LoRAAdapters, from dir: String) throws {
    let path = (dir as NSString).appendingPathComponent(weightsFile)
    let st = try SafeTensors(path: path)
    let expected = Set(adapters.layout.tensors.map(\.name))
    // peft keeps the adapter's name in memory ("lora_A.default.weight") but not in the file; accept either.
    func stored(_ name: String) -> String {
      st.entries[name] != nil ? name : name.replacingOccurrences(of: ".weight", with: ".default.weight")
    }
    // peft also saves a resized embedding whole (`token_adapter.base_layer.weight`): that is the base's, not the adapter's.
    let unknown = st.entries.keys.filter { n in
      !expected.contains(n) && !expected.contains(n.replacingOccurrences(of: ".default.weight", with: ".weight")) && !n.hasSuffix(".token_adapter.base_layer.weight")
    }
    guard unknown.isEmpty else { throw ModelError.file(path: path, problem: "tensors that are no module's adapter: \(unknown.sorted().prefix(5))") }
    for t in adapters.layout.tensors {
      guard st.entries[stored(t.name)] != nil else { throw ModelError.file(path: path, problem: "missing \(t.name)") }
      _ = try st.copyConverting(stored(t.name), shape: t.shape, into: adapters.parameters.pointer + t.offset)
    }
    for i in 0..<adapters.parameters.count where !adapters.parameters[i].isFinite {
      throw ModelError.file(path: path, problem: "adapter value \(i) is not finite")
    }
  }
}

/// peft's `trainable_token_indices`: null, or the embedding's (and LLaMA's head's) token ids.
private func tokenIndices(_ s: LoRASettings, _ architecture: GPTConfig.Architecture) -> String {
  guard !s.tokens.isEmpty else { return "null" }
  let ids = "[" + s.tokens.map(String.init).joined(separator: ", ") + "]"
  return architecture == .llama ? "{\"embed_tokens\": \(ids), \"lm_head\": \(ids)}" : "{\"wte\": \(ids)}"
}

private func jsonNumber(_ x: Float) -> String {
  x == x.rounded() && abs(x) < 1e9 ? String(Int(x)) : String(x)
}
