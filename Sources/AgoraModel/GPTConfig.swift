/// The shape of a GPT-2 style model.
///
/// Key used throughout the model code (as in llm.c): B = batch size, T = sequence length,
/// C = channels, V = vocabulary size, L = layers, NH = heads, hs = C / NH.
public struct GPTConfig: Codable, Equatable, Sendable {
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

  public init(vocabSize: Int, contextLength: Int, channels: Int, layers: Int, heads: Int) {
    self.vocabSize = vocabSize
    self.contextLength = contextLength
    self.channels = channels
    self.layers = layers
    self.heads = heads
  }

  /// Checks the shape; every model built from a config goes through this.
  public func validate() throws {
    func bad(_ what: String) -> ModelError { .invalidConfig(what) }
    guard vocabSize >= 2, vocabSize <= 1 << 20 else { throw bad("vocabSize \(vocabSize) must be in 2...\(1 << 20)") }
    guard contextLength >= 1, contextLength <= 1 << 16 else { throw bad("contextLength \(contextLength) must be in 1...65536") }
    guard channels >= 1, layers >= 1, heads >= 1 else { throw bad("channels, layers and heads must be positive") }
    guard channels % heads == 0 else { throw bad("channels \(channels) must be a multiple of heads \(heads)") }
  }

  /// Number of parameters (embeddings tied with the output head).
  public var parameterCount: Int { ParameterLayout(self).count }

  /// FLOPs of one forward+backward pass over B·T tokens, as (6N + 6·L·C·T)·B·T with N all parameters
  /// (the convention the benchmarks of llm.c and PyTorch are quoted in; PaLM's MFU appendix uses the same form).
  public func trainingFLOPs(batch: Int, sequence: Int) -> Double {
    let n = Double(parameterCount)
    let perToken = 6 * n + 6 * Double(layers * channels * sequence)
    return perToken * Double(batch * sequence)
  }

  // MARK: - Presets

  /// Named model sizes. `vocabSize` of a preset is the default; the trainer uses the tokenizer's.
  public static let presets: [String: GPTConfig] = [
    "tiny": GPTConfig(vocabSize: 512, contextLength: 64, channels: 64, layers: 2, heads: 4),
    "small": GPTConfig(vocabSize: 4096, contextLength: 128, channels: 128, layers: 4, heads: 4),
    "bench-14m": GPTConfig(vocabSize: 8192, contextLength: 256, channels: 384, layers: 6, heads: 6),
    "gpt-100m": GPTConfig(vocabSize: 16384, contextLength: 512, channels: 768, layers: 12, heads: 12),
  ]

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
