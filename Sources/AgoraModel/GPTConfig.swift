/// The shape of a model: GPT-2 (learned positions, LayerNorm, GELU MLP, tied output head) or LLaMA-style
/// (RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention, untied head, no biases).
///
/// Key used throughout the model code (as in llm.c): B = batch size, T = sequence length,
/// C = channels, V = vocabulary size, L = layers, NH = heads, hs = C / NH; LLaMA adds NKV = key/value heads
/// and I = the MLP's hidden width.
public struct GPTConfig: Codable, Equatable, Sendable {
  /// The block's design.
  public enum Architecture: String, Codable, Sendable, CaseIterable {
    /// Hugging Face `GPT2LMHeadModel`.
    case gpt2
    /// Hugging Face `LlamaForCausalLM`.
    case llama
  }

  public var architecture: Architecture
  /// V: vocabulary size (must equal the tokenizer's).
  public var vocabSize: Int
  /// T: maximum context length (learned positions).
  public var contextLength: Int
  /// C: width of the residual stream.
  public var channels: Int
  /// L: number of transformer blocks.
  public var layers: Int
  /// NH: attention heads per block (C must be a multiple of NH).
  public var heads: Int
  /// NKV: key/value heads (LLaMA; NH must be a multiple of NKV). GPT-2: NH.
  public var kvHeads: Int
  /// I: the MLP's hidden width (LLaMA's `intermediate_size`). GPT-2: 4C.
  public var intermediate: Int
  /// Rotary embeddings' base θ (LLaMA).
  public var ropeTheta: Double
  /// RMSNorm's ε (LLaMA; GPT-2's LayerNorm uses 1e-5).
  public var normEps: Float
  /// The pilot checkpoint a federation's version 0 was imported from (`blake3:` and its hash), or nil. Not part
  /// of the shape's arithmetic, but of its identity: the weights header names it, so every version and every
  /// party's model hash says which base it builds on.
  public var base: String? = nil

  /// A GPT-2 shape.
  public init(vocabSize: Int, contextLength: Int, channels: Int, layers: Int, heads: Int) {
    architecture = .gpt2
    self.vocabSize = vocabSize
    self.contextLength = contextLength
    self.channels = channels
    self.layers = layers
    self.heads = heads
    kvHeads = heads
    intermediate = 4 * channels
    ropeTheta = 10_000
    normEps = 1e-5
  }

  /// A LLaMA-style shape.
  public static func llama(vocabSize: Int, contextLength: Int, channels: Int, layers: Int, heads: Int, kvHeads: Int,
                           intermediate: Int, ropeTheta: Double = 10_000, normEps: Float = 1e-5) -> GPTConfig {
    var c = GPTConfig(vocabSize: vocabSize, contextLength: contextLength, channels: channels, layers: layers, heads: heads)
    c.architecture = .llama
    c.kvHeads = kvHeads
    c.intermediate = intermediate
    c.ropeTheta = ropeTheta
    c.normEps = normEps
    return c
  }

  /// hs: width of one attention head.
  public var headSize: Int { channels / heads }

  private enum CodingKeys: String, CodingKey {
    case architecture, vocabSize, contextLength, channels, layers, heads, kvHeads, intermediate, ropeTheta, normEps, base
  }

  /// Decodes configs written before LLaMA existed as GPT-2's (the new keys are optional).
  public init(from decoder: Decoder) throws {
    let k = try decoder.container(keyedBy: CodingKeys.self)
    self.init(vocabSize: try k.decode(Int.self, forKey: .vocabSize), contextLength: try k.decode(Int.self, forKey: .contextLength),
              channels: try k.decode(Int.self, forKey: .channels), layers: try k.decode(Int.self, forKey: .layers),
              heads: try k.decode(Int.self, forKey: .heads))
    architecture = try k.decodeIfPresent(Architecture.self, forKey: .architecture) ?? .gpt2
    kvHeads = try k.decodeIfPresent(Int.self, forKey: .kvHeads) ?? heads
    intermediate = try k.decodeIfPresent(Int.self, forKey: .intermediate) ?? 4 * channels
    ropeTheta = try k.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? 10_000
    normEps = try k.decodeIfPresent(Float.self, forKey: .normEps) ?? 1e-5
    base = try k.decodeIfPresent(String.self, forKey: .base)
  }

  /// Checks the shape; every model built from a config goes through this.
  public func validate() throws {
    func bad(_ what: String) -> ModelError { .invalidConfig(what) }
    guard vocabSize >= 2, vocabSize <= 1 << 20 else { throw bad("vocabSize \(vocabSize) must be in 2...\(1 << 20)") }
    guard contextLength >= 1, contextLength <= 1 << 16 else { throw bad("contextLength \(contextLength) must be in 1...65536") }
    guard channels >= 1, layers >= 1, heads >= 1 else { throw bad("channels, layers and heads must be positive") }
    guard channels % heads == 0 else { throw bad("channels \(channels) must be a multiple of heads \(heads)") }
    switch architecture {
    case .gpt2:
      guard kvHeads == heads, intermediate == 4 * channels else { throw bad("GPT-2 has kvHeads = heads and intermediate = 4·channels") }
    case .llama:
      guard kvHeads >= 1, heads % kvHeads == 0 else { throw bad("heads \(heads) must be a multiple of kvHeads \(kvHeads)") }
      guard headSize % 2 == 0 else { throw bad("head size \(headSize) must be even (rotary embeddings rotate pairs)") }
      guard intermediate >= 1, intermediate <= 1 << 20 else { throw bad("intermediate \(intermediate) must be in 1...\(1 << 20)") }
      guard ropeTheta.isFinite, ropeTheta > 1 else { throw bad("ropeTheta \(ropeTheta) must be finite and > 1") }
      guard normEps.isFinite, normEps > 0 else { throw bad("normEps \(normEps) must be finite and positive") }
    }
  }

  /// Number of parameters (GPT-2's embeddings are tied with the output head; LLaMA's are not).
  public var parameterCount: Int { ParameterLayout(self).count }

  /// FLOPs of one forward+backward pass over B·T tokens, as (6N + 6·L·C·T)·B·T with N the parameters that take
  /// part in matrix products (all of GPT-2's, whose embedding is the output head; LLaMA's without its input
  /// embedding, a lookup) — the convention llm.c and PyTorch benchmarks are quoted in, as in PaLM's MFU appendix.
  public func trainingFLOPs(batch: Int, sequence: Int) -> Double {
    let n = Double(parameterCount - (architecture == .llama ? vocabSize * channels : 0))
    let perToken = 6 * n + 6 * Double(layers * channels * sequence)
    return perToken * Double(batch * sequence)
  }

  // MARK: - Presets

  /// Named model sizes. `vocabSize` of a preset is the default; the trainer uses the tokenizer's.
  public static let presets: [String: GPTConfig] = [
    "tiny": GPTConfig(vocabSize: 512, contextLength: 64, channels: 64, layers: 2, heads: 4),
    "small": GPTConfig(vocabSize: 4096, contextLength: 128, channels: 128, layers: 4, heads: 4),
    // small's context with twice its width and 1.5× its depth: ~4.7M parameters in the blocks (small: 0.8M).
    "medium": GPTConfig(vocabSize: 4096, contextLength: 128, channels: 256, layers: 6, heads: 4),
    "bench-14m": GPTConfig(vocabSize: 8192, contextLength: 256, channels: 384, layers: 6, heads: 6),
    "gpt-100m": GPTConfig(vocabSize: 16384, contextLength: 512, channels: 768, layers: 12, heads: 12),
    // LLaMA-style blocks of the same widths and depths; the SwiGLU MLP's three matrices of I = 8C/3 (rounded up
    // to a multiple of 16) hold what GPT-2's two of 4C hold.
    "llama-tiny": .llama(vocabSize: 512, contextLength: 64, channels: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 176),
    "llama-small": .llama(vocabSize: 4096, contextLength: 128, channels: 128, layers: 4, heads: 4, kvHeads: 2, intermediate: 352),
    "llama-medium": .llama(vocabSize: 4096, contextLength: 128, channels: 256, layers: 6, heads: 4, kvHeads: 2, intermediate: 688),
    "llama-14m": .llama(vocabSize: 8192, contextLength: 256, channels: 384, layers: 6, heads: 6, kvHeads: 2, intermediate: 1024),
    "llama-100m": .llama(vocabSize: 16384, contextLength: 512, channels: 768, layers: 12, heads: 12, kvHeads: 4, intermediate: 2048),
    // For the coordinator's benches only (nobody trains it here): ~1.1B parameters in the shape of a 1B LLaMA.
    "llama-1b": .llama(vocabSize: 32768, contextLength: 2048, channels: 2048, layers: 16, heads: 32, kvHeads: 8, intermediate: 8192),
  ]

  /// The preset of `architecture` named `name`: LLaMA's presets are GPT-2's names with `llama-` in front
  /// (`bench-14m` → `llama-14m`, `gpt-100m` → `llama-100m`); a name that already says its architecture stays.
  public static func preset(_ name: String, architecture: Architecture) throws -> GPTConfig {
    try preset(presetName(name, architecture: architecture))
  }

  /// The name of `name`'s preset of `architecture` (see `preset(_:architecture:)`).
  public static func presetName(_ name: String, architecture: Architecture) -> String {
    guard architecture == .llama, !name.hasPrefix("llama-") else { return name }
    return ["bench-14m": "llama-14m", "gpt-100m": "llama-100m"][name] ?? "llama-" + name
  }

  public static func preset(_ name: String) throws -> GPTConfig {
    guard let c = presets[name] else {
      throw ModelError.invalidConfig("unknown preset '\(name)'; known: \(presets.keys.sorted().joined(separator: ", "))")
    }
    return c
  }
}

/// Errors of the model library: each names what is wrong and, for files, which file.
public enum ModelError: Error, Equatable, CustomStringConvertible {
  case invalidConfig(String)
  case file(path: String, problem: String)
  case mismatch(String)
  case nonFinite(String)

  public var description: String {
    switch self {
    case .invalidConfig(let s): return "invalid model configuration: \(s)"
    case .file(let path, let problem): return "\(path): \(problem)"
    case .mismatch(let s): return "mismatch: \(s)"
    case .nonFinite(let s): return "non-finite value: \(s)"
    }
  }
}
