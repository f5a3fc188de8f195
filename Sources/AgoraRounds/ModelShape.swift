import AgoraFineTune
import AgoraImport
import AgoraData
import AgoraModel
import AgoraTensor
import AgoraTrainer
import Foundation

extension FederationConfig {
  /// The model every party trains: the preset's shape, or the pilot checkpoint's (`model.init`, with its hash as
  /// `base`), with the tokenizer's vocabulary.
  public func modelConfig(tokenizer: Tokenizer) throws -> GPTConfig {
    var c: GPTConfig
    if let dir = modelInit {
      let path = (dir as NSString).appendingPathComponent(Checkpoint.configFile)
      guard let d = FileManager.default.contents(atPath: path) else { throw ConfigError(file: self.path, key: "model.init", problem: "\(path) is missing or unreadable") }
      do {
        c = try HuggingFaceConfig(data: d).shape
        c.base = try HuggingFaceImport.checkpointHash(dir)
      } catch let e as ImportError { throw ConfigError(file: self.path, key: "model.init", problem: e.description) }
    } else {
      c = try GPTConfig.preset(preset)
    }
    c.vocabSize = tokenizer.vocabSize
    return c
  }

  /// Version 0 from the pilot checkpoint (`model.init`), read and checked whole; nil without one.
  public func pilot() throws -> ImportedModel? {
    guard let dir = modelInit else { return nil }
    do { return try HuggingFaceImport.read(dir) } catch let e as ImportError {
      throw ConfigError(file: path, key: "model.init", problem: e.description)
    }
  }
}

/// What a federation's versions are, as every party computes it from federation.toml and the tokenizer: the
/// whole model (pre-training, or full fine-tuning), or a fine-tuning federation's LoRA adapters on its frozen
/// base. A version blob is `header ‖ values`: a safetensors file — the model's `model.safetensors`, or peft's
/// `adapter_model.safetensors` whose metadata names the base's hash and the adapter's settings — so its hash
/// binds the values to the base they adapt.
public struct FederatedModel {
  /// The model's shape: a fine-tuning federation's base, its vocabulary grown by the chat template's tokens.
  public let config: GPTConfig
  /// The federation's tokenizer (a fine-tuning federation's with the template's special tokens).
  public let tokenizer: Tokenizer
  /// The adapters' layout (LoRA fine-tuning; its token rows are the template's new tokens), or nil.
  public let lora: LoRALayout?
  /// Token ids the chat template added to the base's vocabulary.
  public let newTokens: [Int]
  public let header: [UInt8]
  /// Values per version.
  public let count: Int
  /// Where the token embedding's rows lie among a version's values (weighed by token counts, and kept out of
  /// averaging by moments); no rows for adapters, whose values are all alike.
  public var embedding: (offset: Int, rows: Int, width: Int) {
    lora == nil ? (ParameterLayout(config).wte, config.vocabSize, config.channels) : (0, 0, config.channels)
  }

  /// A pre-training federation's model (the whole model of `config`).
  public init(config: GPTConfig, tokenizer: Tokenizer) {
    (self.config, self.tokenizer, lora, newTokens, template) = (config, tokenizer, nil, [], nil)
    header = Checkpoint.weightsHeader(config)
    count = ParameterLayout(config).count
  }

  /// A fine-tuning federation's chat template (nil: it pre-trains).
  public let template: ChatTemplate?

  init(base config: GPTConfig, tokenizer base: Tokenizer, terms: FineTuneTerms) throws {
    let grown = try base.adding(specialTokens: terms.template.specialTokens)
    var c = config
    c.vocabSize = grown.vocabSize
    var lora = terms.lora
    lora?.tokens = Array(base.vocabSize..<grown.vocabSize)
    try self.init(grown: c, tokenizer: grown, lora: lora, template: terms.template, newTokens: Array(base.vocabSize..<grown.vocabSize))
  }

  init(grown c: GPTConfig, tokenizer: Tokenizer, lora s: LoRASettings?, template: ChatTemplate, newTokens: [Int]) throws {
    (config, self.tokenizer, self.template, self.newTokens) = (c, tokenizer, template, newTokens)
    if let s {
      let l = try LoRALayout(c, settings: s)
      lora = l
      count = l.count
      header = FederatedModel.adapterHeader(l, template: template)
    } else {
      lora = nil
      count = ParameterLayout(c).count
      // The whole model: its header names the base already, and the template shows in the vocabulary.
      header = Checkpoint.weightsHeader(c)
    }
  }

  /// A fine-tuning federation's model as its registry records it: the grown base's shape and tokenizer, and
  /// `fineTuneLine` (`BaseModel.fineTune`).
  public init(config: GPTConfig, tokenizer: Tokenizer, fineTune line: String) throws {
    var fields: [String: String] = [:]
    let words = line.split(separator: " ")
    for w in words.dropFirst() {
      guard let eq = w.firstIndex(of: "=") else { throw ModelError.mismatch("fine-tuning record \(line): \(w) is not key=value") }
      fields[String(w[..<eq])] = String(w[w.index(after: eq)...])
    }
    guard let t = fields["template"].flatMap(ChatTemplate.init(rawValue:)) else { throw ModelError.mismatch("fine-tuning record \(line): no known template") }
    let newTokens = (fields["tokens"] ?? "").split(separator: ",").compactMap { Int($0) }
    switch words.first {
    case "full"?:
      try self.init(grown: config, tokenizer: tokenizer, lora: nil, template: t, newTokens: [])
    case "lora"?:
      guard let r = fields["r"].flatMap(Int.init), let a = fields["alpha"].flatMap(Float.init), let d = fields["dropout"].flatMap(Float.init),
            let targets = fields["targets"]?.split(separator: ",").map(String.init) else { throw ModelError.mismatch("fine-tuning record \(line): incomplete") }
      try self.init(grown: config, tokenizer: tokenizer, lora: LoRASettings(rank: r, alpha: a, dropout: d, targets: targets, tokens: newTokens), template: t,
                    newTokens: newTokens)
    default:
      throw ModelError.mismatch("fine-tuning record \(line): neither lora nor full")
    }
  }

  /// How a fine-tuning federation trains, as its version headers and registry state it; nil for pre-training.
  public var fineTuneLine: String? {
    guard let template else { return nil }
    return lora.map { FederatedModel.line($0.settings, template) } ?? "full template=\(template.rawValue)"
  }

  /// An adapter version's safetensors header (SPEC §4, "Adapter versions"): the adapters' tensors under peft's
  /// names, binary32, in layout order; metadata naming the base's hash and the adapter's settings.
  static func adapterHeader(_ l: LoRALayout, template: ChatTemplate) -> [UInt8] {
    SafeTensors.header(l.tensors.map { ($0.name, SafeTensors.DType.f32, $0.shape) },
                       metadata: ["format": "pt", "agora.base": l.config.base ?? "", "agora.adapter": FederatedModel.line(l.settings, template)])
  }

  static func line(_ s: LoRASettings, _ t: ChatTemplate) -> String {
    "lora r=\(s.rank) alpha=\(s.alpha) dropout=\(s.dropout) targets=\(s.targets.joined(separator: ",")) tokens=\(s.tokens.map(String.init).joined(separator: ",")) template=\(t.rawValue)"
  }
}

extension FederationConfig {
  /// What this federation's versions are (`FederatedModel`), with `tokenizer` the one `model.tokenizer` or
  /// `model.init` names (a fine-tuning federation adds its template's tokens to it).
  public func federatedModel(tokenizer: Tokenizer) throws -> FederatedModel {
    let mc = try modelConfig(tokenizer: tokenizer)
    guard let ft = fineTune else { return FederatedModel(config: mc, tokenizer: tokenizer) }
    do { return try FederatedModel(base: mc, tokenizer: tokenizer, terms: ft) } catch {
      throw ConfigError(file: path, key: "finetune", problem: "\(error)")
    }
  }

  /// A fine-tuning federation's base, read whole from `model.init` once and grown by the template's tokens (their
  /// new rows at the mean of the others, the same at every party), with the checkpoint's record; nil for a
  /// pre-training federation.
  public func fineTuneBase() throws -> (base: ChatBase, record: BaseModel)? {
    guard let ft = fineTune, let pilot = try pilot() else { return nil }
    do {
      return (try ChatBase(config: pilot.config, parameters: pilot.parameters, tokenizer: pilot.tokenizer, template: ft.template), pilot.base)
    } catch { throw ConfigError(file: path, key: "model.init", problem: "\(error)") }
  }
}

/// A model that scores versions of a federation on evaluation data: θ goes into `target` (the parameters, or a
/// fine-tuning federation's adapters on the base loaded beside them) and `scoring` gives bits per byte per
/// language (text windows, or the answer tokens of chat conversations).
public final class VersionScoring {
  public let model: GPT
  public let target: FloatBuffer
  public let scoring: any LanguageScoring

  public init(model: GPT, target: FloatBuffer, scoring: any LanguageScoring) {
    (self.model, self.target, self.scoring) = (model, target, scoring)
  }
}

extension FederationConfig {
  /// The coordinator's scoring of versions on `model.eval_data` (nil without it): text windows of a
  /// pre-training federation, the validation conversations of a fine-tuning one (`base` loaded, adapters attached).
  public func versionScoring(_ fm: FederatedModel, base: ChatBase?, cacheDir: String, log: (String) -> Void = { _ in }) throws -> VersionScoring? {
    guard !evalData.isEmpty else { return nil }
    let T = fm.config.contextLength
    guard let ft = fineTune, let base else {
      let corpus = try TokenizedCorpus(sources: try LanguageSource.discover(evalData), tokenizer: fm.tokenizer, tokenizerPath: tokenizer, cacheDir: cacheDir)
      let model = try GPT(config: fm.config, batch: 8, sequence: T, seed: 0)
      return VersionScoring(model: model, target: model.parameters, scoring: Evaluator(corpus: corpus, tokenizer: fm.tokenizer, maxWindows: evalWindows))
    }
    let corpus = try ChatCorpus(dirs: evalData, tokenizer: fm.tokenizer, template: ft.template, maxTokens: T, validationOnly: true, log: log)
    let (model, target) = try adaptedModel(fm, base: base, batch: 8, sequence: T)
    return VersionScoring(model: model, target: target, scoring: ChatEvaluator(corpus: corpus, tokenizer: fm.tokenizer))
  }

  /// A fine-tuning federation's model for forward passes: the base loaded, and (LoRA) adapters attached, as
  /// initialised from the federation's seed; returns it and what a version's values go into.
  public func adaptedModel(_ fm: FederatedModel, base: ChatBase, batch: Int, sequence: Int) throws -> (GPT, FloatBuffer) {
    let model = try GPT(config: fm.config, batch: batch, sequence: sequence, seed: 0, baseGradients: fm.lora == nil)
    guard model.parameters.count == base.parameters.count else { throw ConfigError(file: path, key: "model.init", problem: "the base's shape is not the federation's") }
    model.parameters.copy(from: base.parameters)
    guard let l = fm.lora else { return (model, model.parameters) }
    return (model, try model.attach(lora: l.settings, seed: seed).parameters)
  }

  /// A fine-tuning federation's version 0: peft's initialisation of the adapters from the federation's seed (B = 0,
  /// so the adapted model is the base; the template's token rows as the base has them), or the base itself (full).
  public func fineTuneVersionZero(_ fm: FederatedModel, base: ChatBase) throws -> FloatBuffer {
    try adaptedModel(fm, base: base, batch: 1, sequence: 1).1
  }
}
