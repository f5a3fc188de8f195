import AgoraStorage
import AgoraTensor
import AgoraText
import Foundation

/// A model directory that Hugging Face `transformers` loads as `GPT2LMHeadModel` or `LlamaForCausalLM`:
/// `config.json`, `model.safetensors` (HF tensor names and layout, fp32) and `tokenizer.json`.
/// Training state, when present, is kept beside it in `optimizer.safetensors` (AdamW moments) and
/// `trainer_state.json`.
public enum Checkpoint {
  public static let modelFile = "model.safetensors"
  public static let configFile = "config.json"
  public static let tokenizerFile = "tokenizer.json"
  public static let optimizerFile = "optimizer.safetensors"
  public static let tokenizerConfigFile = "tokenizer_config.json"

  /// Hugging Face `config.json` for `c` (GPT-2's or LLaMA's).
  public static func configJSON(_ c: GPTConfig, eot: Int, bos: Int? = nil) -> Data {
    var d = c.architecture == .llama ? llamaConfigJSON(c, eot: eot, bos: bos ?? eot) : gpt2ConfigJSON(c, eot: eot, bos: bos)
    // A model that builds on a pilot checkpoint says which (transformers keeps unknown keys as they are).
    if let b = c.base, let close = d.lastIndex(of: UInt8(ascii: "}")) {
      d.replaceSubrange(close..<d.endIndex, with: Data("  ,\"agora_base\": \(jsonString(b))\n}\n".utf8))
    }
    return d
  }

  static func gpt2ConfigJSON(_ c: GPTConfig, eot: Int, bos: Int?) -> Data {
    let s = """
    {
      "architectures": ["GPT2LMHeadModel"],
      "model_type": "gpt2",
      "vocab_size": \(c.vocabSize),
      "n_positions": \(c.contextLength),
      "n_ctx": \(c.contextLength),
      "n_embd": \(c.channels),
      "n_layer": \(c.layers),
      "n_head": \(c.heads),
      "n_inner": null,
      "activation_function": "gelu_new",
      "layer_norm_epsilon": 1e-05,
      "resid_pdrop": 0.0,
      "embd_pdrop": 0.0,
      "attn_pdrop": 0.0,
      "initializer_range": 0.02,
      "scale_attn_weights": true,
      "tie_word_embeddings": true,
      "use_cache": true,
      "bos_token_id": \(bos ?? eot),
      "eos_token_id": \(eot),
      "torch_dtype": "float32"
    }

    """
    return Data(s.utf8)
  }

  static func llamaConfigJSON(_ c: GPTConfig, eot: Int, bos: Int) -> Data {
    let s = """
    {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "vocab_size": \(c.vocabSize),
      "max_position_embeddings": \(c.contextLength),
      "hidden_size": \(c.channels),
      "intermediate_size": \(c.intermediate),
      "num_hidden_layers": \(c.layers),
      "num_attention_heads": \(c.heads),
      "num_key_value_heads": \(c.kvHeads),
      "head_dim": \(c.headSize),
      "hidden_act": "silu",
      "rms_norm_eps": \(c.normEps),
      "rope_theta": \(c.ropeTheta),
      "rope_scaling": null,
      "attention_bias": false,
      "mlp_bias": false,
      "attention_dropout": 0.0,
      "pretraining_tp": 1,
      "initializer_range": 0.02,
      "tie_word_embeddings": false,
      "use_cache": true,
      "bos_token_id": \(bos),
      "eos_token_id": \(eot),
      "torch_dtype": "float32"
    }

    """
    return Data(s.utf8)
  }

  /// Reads the model shape from a `config.json`.
  public static func readConfig(_ path: String) throws -> GPTConfig {
    guard let d = FileManager.default.contents(atPath: path) else { throw ModelError.file(path: path, problem: "cannot read the file") }
    return try readConfig(data: d, source: path)
  }

  /// Reads the model shape from the bytes of a `config.json` (`source` names them in errors).
  public static func readConfig(data d: Data, source path: String) throws -> GPTConfig {
    func fail(_ s: String) -> ModelError { .file(path: path, problem: s) }
    guard let o = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] else { throw fail("not a JSON object (corrupt or truncated?)") }
    func int(_ k: String) throws -> Int {
      guard let v = (o[k] as? NSNumber)?.intValue else { throw fail("key \"\(k)\" is missing or not an integer") }
      return v
    }
    var c = try readShape(o, fail: fail, int: int)
    if let b = o["agora_base"] { guard let s = b as? String else { throw fail("agora_base is not a string") }; c.base = s }
    return c
  }

  private static func readShape(_ o: [String: Any], fail: (String) -> ModelError, int: (String) throws -> Int) throws -> GPTConfig {
    let type = o["model_type"] as? String ?? "gpt2"
    if type == "llama" { return try readLlamaConfig(o, fail: fail, int: int) }
    guard type == "gpt2" else { throw fail("model_type is \"\(type)\", expected \"gpt2\" or \"llama\"") }
    if let a = o["activation_function"] as? String, a != "gelu_new" { throw fail("activation_function \"\(a)\" is not supported (gelu_new)") }
    if let inner = o["n_inner"], !(inner is NSNull) { throw fail("n_inner must be null (4·n_embd)") }
    let c = GPTConfig(vocabSize: try int("vocab_size"), contextLength: try int("n_positions"),
                      channels: try int("n_embd"), layers: try int("n_layer"), heads: try int("n_head"))
    do { try c.validate() } catch { throw fail("\(error)") }
    return c
  }

  private static func readLlamaConfig(_ o: [String: Any], fail: (String) -> ModelError, int: (String) throws -> Int) throws -> GPTConfig {
    func number(_ k: String, _ fallback: Double) throws -> Double {
      guard let v = o[k] else { return fallback }
      guard let n = (v as? NSNumber)?.doubleValue else { throw fail("key \"\(k)\" is not a number") }
      return n
    }
    if let a = o["hidden_act"] as? String, a != "silu" { throw fail("hidden_act \"\(a)\" is not supported (silu)") }
    if let tied = o["tie_word_embeddings"] as? Bool, tied { throw fail("tie_word_embeddings must be false (LLaMA's head is its own)") }
    for k in ["attention_bias", "mlp_bias"] { if let b = o[k] as? Bool, b { throw fail("\(k) must be false") } }
    if let r = o["rope_scaling"], !(r is NSNull) { throw fail("rope_scaling is not supported") }
    if let r = o["rope_parameters"] as? [String: Any], let t = r["rope_type"] as? String, t != "default" { throw fail("rope_parameters.rope_type \"\(t)\" is not supported") }
    let heads = try int("num_attention_heads"), channels = try int("hidden_size")
    let c = GPTConfig.llama(vocabSize: try int("vocab_size"), contextLength: try int("max_position_embeddings"),
                            channels: channels, layers: try int("num_hidden_layers"), heads: heads,
                            kvHeads: o["num_key_value_heads"] == nil ? heads : try int("num_key_value_heads"),
                            intermediate: try int("intermediate_size"),
                            // transformers 5 keeps θ in rope_parameters (with rope_type "default")
                            ropeTheta: try ((o["rope_parameters"] as? [String: Any])?["rope_theta"] as? NSNumber)?.doubleValue ?? number("rope_theta", 10_000),
                            normEps: Float(try number("rms_norm_eps", 1e-6)))
    if o["head_dim"] != nil, try int("head_dim") != c.headSize { throw fail("head_dim must be hidden_size / num_attention_heads") }
    do { try c.validate() } catch { throw fail("\(error)") }
    return c
  }

  /// Writes the model directory (atomically per file).
  public static func saveModel(_ model: GPT, tokenizer: Tokenizer?, to dir: String, metadata: [String: String] = [:], bosTokenID: Int? = nil) throws {
    try save(parameters: model.parameters, config: model.config, tokenizer: tokenizer, to: dir, metadata: metadata, bosTokenID: bosTokenID)
  }

  /// The safetensors header of a version blob: every tensor of `config`'s layout under its Hugging Face
  /// GPT-2 name, binary32, back to back in layout order, so the data that follows is exactly the flat
  /// parameter buffer. A version blob (header ‖ parameters) is therefore a `model.safetensors` that
  /// transformers loads, and anyone who knows the config can rebuild its bytes from the parameters.
  /// A LLaMA header's metadata also names what the shapes leave open (heads, key/value heads, θ, ε), so the
  /// header's hash — a federation's model hash — pins the whole architecture.
  public static func weightsHeader(_ config: GPTConfig) -> [UInt8] {
    SafeTensors.header(ParameterLayout(config).tensors.map { ($0.name, SafeTensors.DType.f32, $0.shape) }, metadata: headerMetadata(config))
  }

  static func headerMetadata(_ c: GPTConfig) -> [String: String] {
    var m = ["format": "pt"]
    if c.architecture == .llama { m["agora.architecture"] = "llama heads=\(c.heads) kv_heads=\(c.kvHeads) rope_theta=\(c.ropeTheta) rms_norm_eps=\(c.normEps)" }
    if let b = c.base { m["agora.base"] = b }
    return m
  }

  /// Writes a model directory from a flat parameter buffer in `config`'s layout.
  /// A tokenizer that is not Agora's own layout also gets `tokenizer_config.json` (its end-of-text and
  /// beginning tokens), so that both Agora and transformers find them again.
  /// With `chat` (a chat template's Jinja and the token that ends a turn), `tokenizer_config.json` carries the
  /// template and `generation_config.json` ends generation at the end of a turn as well as at the end of text.
  /// Weights above this many octets are written as shards, `model-0000i-of-0000n.safetensors`, each at most this
  /// large (a tensor larger than it alone in its shard), with `model.safetensors.index.json` naming each tensor's
  /// file, as transformers' `save_pretrained` writes them.
  public static let defaultShardBytes = 2_000_000_000
  public static let indexFile = "model.safetensors.index.json"

  public static func save(parameters: FloatBuffer, config: GPTConfig, tokenizer: Tokenizer?, to dir: String, metadata: [String: String] = [:],
                          bosTokenID: Int? = nil, chat: (template: String, endOfTurn: String)? = nil, shardBytes: Int = defaultShardBytes) throws {
    let layout = ParameterLayout(config)
    precondition(parameters.count == layout.count, "Checkpoint.save: the buffer does not fit the layout")
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let p = UnsafeRawPointer(parameters.pointer)
    let outs = layout.tensors.map { SafeTensors.Output(name: $0.name, shape: $0.shape, pointer: p + 4 * $0.offset) }
    var meta = metadata
    for (k, v) in headerMetadata(config) { meta[k] = v }
    try writeWeights(outs, metadata: meta, to: dir, shardBytes: shardBytes)
    let bos = bosTokenID ?? tokenizer?.prefixIDs.first.map(Int.init)
    try AtomicFile.write(configJSON(config, eot: tokenizer.map { Int($0.eotID) } ?? config.vocabSize - 1, bos: bos),
                         to: (dir as NSString).appendingPathComponent(configFile))
    if let tokenizer {
      try tokenizer.save(to: (dir as NSString).appendingPathComponent(tokenizerFile))
      if !tokenizer.isAgoraLayout || chat != nil {
        try AtomicFile.write(tokenizer.configJSON(bos: bos, chatTemplate: chat?.template), to: (dir as NSString).appendingPathComponent(tokenizerConfigFile))
      }
      if let chat, let end = tokenizer.addedTokenID(chat.endOfTurn) {
        let ends = [Int(tokenizer.eotID), Int(end)].map(String.init).joined(separator: ", ")
        let bosPart = bos.map { "\"bos_token_id\": \($0), " } ?? ""
        try AtomicFile.write(Data("{\(bosPart)\"eos_token_id\": [\(ends)]}\n".utf8), to: (dir as NSString).appendingPathComponent("generation_config.json"))
      }
    }
  }

  /// Writes `tensors` as `dir/model.safetensors`, or, above `shardBytes`, as shards and their index (removing
  /// what another layout left there, so a directory never holds both).
  static func writeWeights(_ tensors: [SafeTensors.Output], metadata: [String: String], to dir: String, shardBytes: Int) throws {
    let fm = FileManager.default
    let total = tensors.reduce(0) { $0 + $1.byteCount }
    let single = (dir as NSString).appendingPathComponent(modelFile), index = (dir as NSString).appendingPathComponent(indexFile)
    for f in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] where f.hasPrefix("model-") && f.hasSuffix(".safetensors") {
      try fm.removeItem(atPath: (dir as NSString).appendingPathComponent(f))
    }
    guard total > shardBytes else {
      try? fm.removeItem(atPath: index)
      try SafeTensors.write(tensors, metadata: metadata, to: single)
      return
    }
    var shards: [[SafeTensors.Output]] = [[]]
    var size = 0
    for t in tensors {
      if size > 0, size + t.byteCount > shardBytes { shards.append([]); size = 0 }
      shards[shards.count - 1].append(t)
      size += t.byteCount
    }
    var map: [(String, String)] = []
    for (i, shard) in shards.enumerated() {
      let name = String(format: "model-%05d-of-%05d.safetensors", i + 1, shards.count)
      try SafeTensors.write(shard, metadata: metadata, to: (dir as NSString).appendingPathComponent(name))
      map += shard.map { ($0.name, name) }
    }
    let entries = map.sorted { $0.0 < $1.0 }.map { "    \(jsonString($0.0)): \(jsonString($0.1))" }.joined(separator: ",\n")
    try AtomicFile.write(Data("{\n  \"metadata\": {\"total_size\": \(total)},\n  \"weight_map\": {\n\(entries)\n  }\n}\n".utf8), to: index)
    try? fm.removeItem(atPath: single)
  }

  /// Loads weights from `dir/model.safetensors`, or the shards `dir/model.safetensors.index.json` names, into
  /// `model`, checking every name and shape.
  public static func loadWeights(into model: GPT, from dir: String) throws {
    let index = (dir as NSString).appendingPathComponent(indexFile)
    var files: [String: SafeTensors] = [:]
    var fileOf: [String: String] = [:]
    if FileManager.default.fileExists(atPath: index) {
      guard let d = FileManager.default.contents(atPath: index),
            let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any], let map = o["weight_map"] as? [String: String] else {
        throw ModelError.file(path: index, problem: "not a safetensors index (a JSON object with a weight_map of names to files)")
      }
      for (name, f) in map {
        guard !f.contains("/"), !f.hasPrefix(".") else { throw ModelError.file(path: index, problem: "shard \(jsonString(f)) is not a file name in the directory") }
        fileOf[name] = (dir as NSString).appendingPathComponent(f)
      }
      for f in Set(fileOf.values) { files[f] = try SafeTensors(path: f) }
    } else {
      let path = (dir as NSString).appendingPathComponent(modelFile)
      files[path] = try SafeTensors(path: path)
      for name in files[path]!.entries.keys { fileOf[name] = path }
    }
    let expected = Set(model.layout.tensors.map(\.name))
    // transformers may add GPT-2's tied head and causal-mask buffers, or LLaMA's rotary frequencies; anything
    // else is a mismatch.
    let extra = model.config.architecture == .gpt2 ? ["lm_head.weight", ".attn.bias", ".attn.masked_bias"] : [".rotary_emb.inv_freq"]
    for (path, st) in files.sorted(by: { $0.key < $1.key }) {
      let unknown = st.entries.keys.filter { name in !expected.contains(name) && !extra.contains { name.hasSuffix($0) } }
      guard unknown.isEmpty else { throw ModelError.file(path: path, problem: "unexpected tensors \(unknown.sorted().prefix(5))") }
    }
    for t in model.layout.tensors {
      guard let f = fileOf[t.name], let st = files[f] else { throw ModelError.file(path: dir, problem: "no file holds tensor \(t.name)") }
      try st.copyFloats(t.name, shape: t.shape, into: model.parameters.pointer + t.offset)
      // The file that holds a value that is not finite is the one named.
      for i in t.offset..<(t.offset + t.shape.reduce(1, *)) where !model.parameters[i].isFinite {
        throw ModelError.file(path: f, problem: "parameter \(i) is not finite")
      }
    }
  }

  /// Loads a whole model directory: config, tokenizer (must agree on the vocabulary) and weights.
  public static func load(dir: String, batch B: Int, sequence T: Int) throws -> (GPT, Tokenizer) {
    let config = try readConfig((dir as NSString).appendingPathComponent(configFile))
    let tokPath = (dir as NSString).appendingPathComponent(tokenizerFile)
    let tok = try Tokenizer(contentsOf: tokPath)
    guard tok.vocabSize == config.vocabSize else {
      throw ModelError.file(path: tokPath, problem: "vocabulary of \(tok.vocabSize) does not match config.json's vocab_size \(config.vocabSize)")
    }
    let model = try GPT(config: config, batch: B, sequence: min(T, config.contextLength))
    try loadWeights(into: model, from: dir)
    return (model, tok)
  }

  /// Saves AdamW's moments and step with `state` (a JSON document of the trainer's own).
  public static func saveOptimizer(_ opt: AdamW, layoutCount: Int, to dir: String) throws {
    let outs = [
      SafeTensors.Output(name: "adam.m", shape: [layoutCount], pointer: UnsafeRawPointer(opt.m.pointer)),
      SafeTensors.Output(name: "adam.v", shape: [layoutCount], pointer: UnsafeRawPointer(opt.v.pointer)),
    ]
    try SafeTensors.write(outs, metadata: ["step": String(opt.step), "agora": "optimizer-v1"],
                          to: (dir as NSString).appendingPathComponent(optimizerFile))
  }

  public static func loadOptimizer(_ opt: AdamW, layoutCount: Int, from dir: String) throws {
    let path = (dir as NSString).appendingPathComponent(optimizerFile)
    let st = try SafeTensors(path: path)
    guard st.metadata["agora"] == "optimizer-v1", let step = st.metadata["step"].flatMap(Int.init), step >= 0 else {
      throw ModelError.file(path: path, problem: "not an Agora optimizer state (metadata agora/step missing)")
    }
    try opt.restore(step: step, m: try st.floats("adam.m", shape: [layoutCount]), v: try st.floats("adam.v", shape: [layoutCount]))
  }
}
