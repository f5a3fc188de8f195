import AgoraData
import AgoraModel
import AgoraStorage
import AgoraTensor
import AgoraFineTune
import Foundation

/// Everything that decides a fine-tuning run on chat data (issue #34): LoRA adapters on a frozen base, or the
/// whole model, with the loss on answer tokens only.
public struct FineTuneSettings: Codable, Equatable, Sendable {
  public enum Method: String, Codable, Sendable, CaseIterable {
    /// Low-rank adapters on a frozen base (and the rows of the chat template's new tokens).
    case lora
    /// Every parameter trains.
    case full
  }

  public var method: Method = .lora
  /// Rank, alpha, dropout and targets (the recommended: r 16, α 32, every linear layer of the blocks).
  public var lora: LoRASettings? = nil
  public var template: ChatTemplate = .chatml
  public var batch: Int = 8
  public var sequence: Int? = nil
  public var steps: Int = 100
  public var maxLR: Float = 1e-3
  public var minLR: Float = 1e-4
  public var warmupSteps: Int = 10
  public var weightDecay: Float = 0
  public var clipNorm: Float = 1
  public var seed: UInt64 = 1337
  public var precision: Precision? = nil
  /// Mixture weight per language (by name); languages not named get weight 1.
  public var mixture: [String: Double] = [:]
  public init() {}
}

/// A base model made ready for a chat template: the template's special tokens added to its vocabulary (the
/// embedding grown, new rows at the mean of the others) and the ids that are new.
public struct ChatBase {
  public let config: GPTConfig
  public let parameters: FloatBuffer
  public let tokenizer: Tokenizer
  public let newTokens: [Int]

  public init(config: GPTConfig, parameters: FloatBuffer, tokenizer: Tokenizer, template: ChatTemplate) throws {
    let grown = try tokenizer.adding(specialTokens: template.specialTokens)
    self.tokenizer = grown
    newTokens = Array(tokenizer.vocabSize..<grown.vocabSize)
    if grown.vocabSize == config.vocabSize {
      (self.config, self.parameters) = (config, parameters)
    } else {
      (self.config, self.parameters) = try ParameterLayout.growVocabulary(parameters, config: config, to: grown.vocabSize)
    }
  }
}

/// Answer-token bits per byte on each language's validation conversations: the summed loss of the answer
/// tokens in bits over their UTF-8 bytes (a special token, such as the end of a turn, counts as one byte).
public struct ChatEvaluator {
  public let corpus: ChatCorpus
  public let byteLengths: [Int32]
  public let pad: Int32

  public init(corpus: ChatCorpus, tokenizer: Tokenizer) {
    self.corpus = corpus
    byteLengths = tokenizer.byteLengths.map { max($0, 1) }
    pad = tokenizer.eotID
  }

  /// Answer-token bits per byte per language with validation conversations; only `languages` when given, over
  /// the first `windows` packed rows of each when given (the same rows every time).
  public func scores(model: GPT, languages: Set<String>? = nil, windows limit: Int? = nil) throws -> [(language: String, bitsPerByte: Double, bytes: Int)] {
    var out: [(language: String, bitsPerByte: Double, bytes: Int)] = []
    for (li, lang) in corpus.languages.enumerated() {
      if let only = languages, !only.contains(lang) { continue }
      guard let v = corpus.valid[li], !v.conversations.isEmpty else { continue }
      let all = ChatPacking.rows(v.conversations.map(\.chat), T: model.T, pad: pad)
      let rows = limit.map { Array(all.prefix(max(1, $0))) } ?? all
      var nats = 0.0, bytes = 0.0
      var i = 0
      while i < rows.count {
        var x: [Int32] = [], y: [Int32] = []
        for r in 0..<model.B {
          let row = i + r < rows.count ? rows[i + r] : (tokens: [Int32](repeating: pad, count: model.T), targets: [Int32](repeating: GPT.ignoredTarget, count: model.T))
          x += row.tokens
          y += row.targets
        }
        _ = try model.forward(tokens: x, targets: y)
        let losses = model.lastLosses
        for (k, t) in y.enumerated() where t != GPT.ignoredTarget {
          nats += Double(losses[k])
          bytes += Double(byteLengths[Int(t)])
        }
        i += model.B
      }
      if bytes > 0 { out.append((lang, nats / log(2.0) / bytes, Int(bytes))) }
    }
    return out
  }
}

public struct FineTuneState: Codable, Sendable {
  public var settings: FineTuneSettings
  public var step: Int
  public var languages: [String]
  public var losses: [Float]
  public var evals: [EvalRecord]
}

/// Fine-tunes a model on chat data: LoRA adapters on the frozen base (only they have optimizer state), or the
/// whole model. The base arrives ready for the template (`ChatBase`).
public final class FineTuner {
  public let settings: FineTuneSettings
  public let model: GPT
  public let adapters: LoRAAdapters?
  public let optimizer: AdamW
  public let tokenizer: Tokenizer
  public let corpus: ChatCorpus
  public let sampler: ChatSampler
  public let evaluator: ChatEvaluator
  public let schedule: LRSchedule
  public private(set) var state: FineTuneState
  /// Answer tokens trained on per language since this fine-tuner was made.
  public private(set) var answerTokensByLanguage: [String: UInt64] = [:]
  /// Tokens (rows × T, prompts and padding included) trained on per language since this fine-tuner was made.
  public private(set) var tokensByLanguage: [String: UInt64] = [:]

  public init(settings: FineTuneSettings, base: ChatBase, corpus: ChatCorpus) throws {
    self.settings = settings
    let T = settings.sequence ?? base.config.contextLength
    model = try GPT(config: base.config, batch: settings.batch, sequence: T, seed: settings.seed, precision: settings.precision ?? .fp32,
                    baseGradients: settings.method == .full)
    model.parameters.copy(from: base.parameters)
    var opt = AdamW.Settings()
    opt.weightDecay = settings.weightDecay
    switch settings.method {
    case .lora:
      var lora = settings.lora ?? LoRASettings(targets: LoRASettings.defaultTargets(for: base.config.architecture))
      if settings.lora == nil { lora.tokens = base.newTokens }
      let a = try model.attach(lora: lora, seed: settings.seed)
      adapters = a
      optimizer = AdamW(tensors: a.layout.tensors, count: a.layout.count, settings: opt)
    case .full:
      adapters = nil
      optimizer = AdamW(layout: model.layout, settings: opt)
    }
    tokenizer = base.tokenizer
    self.corpus = corpus
    sampler = try ChatSampler(corpus: corpus, weights: corpus.languages.map { settings.mixture[$0] ?? 1 }, seed: settings.seed, pad: base.tokenizer.eotID)
    evaluator = ChatEvaluator(corpus: corpus, tokenizer: base.tokenizer)
    schedule = LRSchedule(maxLR: settings.maxLR, minLR: settings.minLR, warmupSteps: settings.warmupSteps, totalSteps: settings.steps)
    state = FineTuneState(settings: settings, step: 0, languages: corpus.languages, losses: [], evals: [])
  }

  /// What trains: the adapters' buffer (LoRA) or the parameters (full).
  public var trainedBuffers: (parameters: FloatBuffer, gradients: FloatBuffer) {
    adapters.map { ($0.parameters, $0.gradients) } ?? (model.parameters, model.gradients)
  }

  /// One optimizer step: the mean loss over the batch's answer tokens.
  public func step() throws -> (loss: Float, norm: Float, lr: Float) {
    let s = state.step
    let (x, y, langs) = sampler.batch(s, B: model.B, T: model.T)
    let counted = y.filter { $0 != GPT.ignoredTarget }.count
    for (r, l) in langs.enumerated() {
      let n = y[(r * model.T)..<((r + 1) * model.T)].filter { $0 != GPT.ignoredTarget }.count
      answerTokensByLanguage[corpus.languages[l], default: 0] += UInt64(n)
      tokensByLanguage[corpus.languages[l], default: 0] += UInt64(model.T)
    }
    model.zeroGradients()
    let loss = try model.forward(tokens: x, targets: y, backwardScale: 1 / Float(max(counted, 1)))!
    guard loss.isFinite else { throw TrainerError.nonFiniteLoss(step: s) }
    try model.backward()
    let (p, g) = trainedBuffers
    let norm = clipGradientNorm(g, maxNorm: settings.clipNorm)
    let lr = schedule.lr(at: s)
    optimizer.update(params: p, grads: g, lr: lr)
    state.step += 1
    state.losses.append(loss)
    return (loss, norm, lr)
  }

  /// Answer-token bits/byte per language on the validation conversations, recorded.
  @discardableResult
  public func evaluate() throws -> EvalRecord {
    let r = EvalRecord(step: state.step, bitsPerByte: Dictionary(uniqueKeysWithValues: try evaluator.scores(model: model).map { ($0.language, $0.bitsPerByte) }))
    state.evals.append(r)
    return r
  }

  /// The model as it now computes, as one parameter buffer: the base with the adapters merged in (LoRA), or the
  /// parameters (full).
  public func mergedParameters() -> FloatBuffer {
    let out = FloatBuffer(count: model.parameters.count)
    out.copy(from: model.parameters)
    adapters?.merge(into: out)
    return out
  }

  /// Writes `dir/merged/` (a Hugging Face model with the tokenizer and its `chat_template`), `dir/adapter/` (peft's
  /// adapter, LoRA only) and `dir/finetune_state.json`.
  public func save(to dir: String, baseName: String?, bosTokenID: Int? = nil) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let merged = (dir as NSString).appendingPathComponent("merged")
    try Checkpoint.save(parameters: mergedParameters(), config: model.config, tokenizer: tokenizer, to: merged, bosTokenID: bosTokenID,
                        chat: (settings.template.jinja, settings.template.endOfTurn))
    if let a = adapters {
      try LoRACheckpoint.save(a, to: (dir as NSString).appendingPathComponent("adapter"), baseModel: baseName)
    }
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    try AtomicFile.write(try enc.encode(state), to: (dir as NSString).appendingPathComponent("finetune_state.json"))
  }
}
