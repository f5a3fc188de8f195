import AgoraModel
import AgoraText
import Foundation

/// What an import refuses, by name: the config field, the tensor or the file, and why.
public enum ImportError: Error, Equatable, CustomStringConvertible {
  /// A field of config.json that Agora's trainer does not implement (or that is missing or malformed).
  case config(field: String, problem: String)
  /// A tensor that is missing, unexpected, of the wrong shape or type, or not finite.
  case tensor(name: String, problem: String)
  /// A file that is missing, truncated or not what it claims to be.
  case file(path: String, problem: String)
  /// The output directory.
  case output(path: String, problem: String)

  public var description: String {
    switch self {
    case .config(let f, let p): return "config.json: \(f): \(p)"
    case .tensor(let n, let p): return "tensor \(n): \(p)"
    case .file(let path, let p): return "\(path): \(p)"
    case .output(let path, let p): return "\(path): \(p)"
    }
  }
}

/// A Hugging Face `config.json` of `GPT2LMHeadModel` or `LlamaForCausalLM`, read strictly: every field whose
/// value changes what the model computes is either mapped onto `GPTConfig` or, when the trainer does not
/// implement it, refused by name. Fields that change nothing the model computes (dropout at inference, ids
/// of special tokens, bookkeeping) are read where useful and otherwise left alone.
public struct HuggingFaceConfig: Sendable {
  public let shape: GPTConfig
  /// `GPT2LMHeadModel` or `LlamaForCausalLM`.
  public let architecture: String
  /// Whether the output head is the input embedding (LLaMA's is then untied at import: Agora's LLaMA has its own head).
  public let tiedHead: Bool
  public let eosTokenIDs: [Int]
  public let bosTokenID: Int?
  /// `_name_or_path`, when the config records where it came from.
  public let nameOrPath: String?

  public init(data: Data) throws {
    guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
      throw ImportError.config(field: "(document)", problem: "not a JSON object (corrupt or truncated?)")
    }
    func bad(_ f: String, _ p: String) -> ImportError { .config(field: f, problem: p) }
    func int(_ k: String) throws -> Int {
      guard let v = o[k] else { throw bad(k, "missing") }
      guard let n = v as? NSNumber, n.doubleValue == n.doubleValue.rounded() else { throw bad(k, "not an integer") }
      return n.intValue
    }
    func number(_ k: String, in d: [String: Any]? = nil, default fallback: Double) throws -> Double {
      guard let v = (d ?? o)[k], !(v is NSNull) else { return fallback }
      guard let n = (v as? NSNumber)?.doubleValue, n.isFinite else { throw bad(k, "not a finite number") }
      return n
    }
    func flag(_ k: String, _ allowed: Bool) throws {
      if let v = o[k] as? Bool, v != allowed { throw bad(k, "\(v) is not supported (\(allowed))") }
    }
    func ids(_ k: String) throws -> [Int] {
      switch o[k] {
      case nil, is NSNull: return []
      case let n as NSNumber: return [n.intValue]
      case let a as [NSNumber]: return a.map(\.intValue)
      default: throw bad(k, "neither an id nor a list of ids")
      }
    }
    let type = o["model_type"] as? String
    let archs = o["architectures"] as? [String] ?? []
    nameOrPath = o["_name_or_path"] as? String
    eosTokenIDs = try ids("eos_token_id")
    bosTokenID = try ids("bos_token_id").first
    if o["quantization_config"] != nil { throw bad("quantization_config", "quantised checkpoints are not supported (fp32, fp16 or bf16 only)") }
    if let v = o["add_cross_attention"] as? Bool, v { throw bad("add_cross_attention", "true is not supported") }
    switch type {
    case "gpt2":
      guard archs.isEmpty || archs.contains("GPT2LMHeadModel") else { throw bad("architectures", "\(archs) is not supported (GPT2LMHeadModel)") }
      architecture = "GPT2LMHeadModel"
      let act = o["activation_function"] as? String ?? "gelu_new"
      guard ["gelu_new", "gelu_pytorch_tanh"].contains(act) else { throw bad("activation_function", "\"\(act)\" is not supported (gelu_new, GELU's tanh approximation)") }
      let C = try int("n_embd")
      if let inner = o["n_inner"], !(inner is NSNull), try int("n_inner") != 4 * C { throw bad("n_inner", "must be null or 4·n_embd = \(4 * C)") }
      let eps = try number("layer_norm_epsilon", default: 1e-5)
      guard abs(eps - 1e-5) <= 1e-12 else { throw bad("layer_norm_epsilon", "\(eps) is not supported (1e-5)") }
      try flag("scale_attn_weights", true)
      try flag("scale_attn_by_inverse_layer_idx", false)
      try flag("tie_word_embeddings", true)
      tiedHead = true
      shape = GPTConfig(vocabSize: try int("vocab_size"), contextLength: try int("n_positions"), channels: C, layers: try int("n_layer"), heads: try int("n_head"))
    case "llama":
      guard archs.isEmpty || archs.contains("LlamaForCausalLM") else { throw bad("architectures", "\(archs) is not supported (LlamaForCausalLM)") }
      architecture = "LlamaForCausalLM"
      let act = o["hidden_act"] as? String ?? "silu"
      guard act == "silu" else { throw bad("hidden_act", "\"\(act)\" is not supported (silu)") }
      try flag("attention_bias", false)
      try flag("mlp_bias", false)
      // transformers 4 keeps θ at the top with an optional `rope_scaling`; 5 puts both in `rope_parameters`.
      var theta = try number("rope_theta", default: 10_000)
      for k in ["rope_scaling", "rope_parameters"] {
        guard let r = o[k], !(r is NSNull) else { continue }
        guard let d = r as? [String: Any] else { throw bad(k, "not an object") }
        let kind = d["rope_type"] as? String ?? d["type"] as? String ?? "default"
        guard kind == "default" else { throw bad(k, "rope_type \"\(kind)\" is not supported (default rotary embeddings only)") }
        theta = try number("rope_theta", in: d, default: theta)
      }
      let C = try int("hidden_size"), heads = try int("num_attention_heads")
      if let hd = o["head_dim"], !(hd is NSNull), try int("head_dim") != C / max(1, heads) {
        throw bad("head_dim", "must be hidden_size / num_attention_heads = \(C / max(1, heads))")
      }
      tiedHead = o["tie_word_embeddings"] as? Bool ?? false
      shape = .llama(vocabSize: try int("vocab_size"), contextLength: try int("max_position_embeddings"), channels: C,
                     layers: try int("num_hidden_layers"), heads: heads,
                     kvHeads: o["num_key_value_heads"] == nil || o["num_key_value_heads"] is NSNull ? heads : try int("num_key_value_heads"),
                     intermediate: try int("intermediate_size"), ropeTheta: theta, normEps: Float(try number("rms_norm_eps", default: 1e-6)))
    case nil: throw bad("model_type", "missing")
    case let t?: throw bad("model_type", "\"\(t)\" is not supported (gpt2 or llama)")
    }
    do { try shape.validate() } catch { throw bad(type == "gpt2" ? "n_embd/n_head/n_layer/vocab_size/n_positions" : "hidden_size/num_attention_heads/num_key_value_heads/intermediate_size/max_position_embeddings", "\(error)") }
  }
}
