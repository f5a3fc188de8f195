import AgoraCrypto
import AgoraFineTune
import AgoraModel
import AgoraTrainer
import AgoraWire
import Foundation

extension FederationConfig {
  /// What a party of this federation trains with (JOIN carries it; the coordinator compares): the tokenizer
  /// and the model shape by hash, and the inner training settings.
  public func terms(tokenizer: Tokenizer, model: GPTConfig) throws -> TrainingTerms {
    try terms(FederatedModel(config: model, tokenizer: tokenizer))
  }

  /// The terms of a federation whose versions are `model`'s: the model hash is its version header's (a
  /// fine-tuning federation's names the base's hash and the adapter's settings).
  public func terms(_ model: FederatedModel) throws -> TrainingTerms {
    TrainingTerms(tokenizerHash: Sodium.blake2b([UInt8](model.tokenizer.jsonData())), modelHash: Sodium.blake2b(model.header),
                  innerSteps: UInt32(innerSteps), batch: UInt32(batch), learningRateBits: Float(learningRate).bitPattern, rounds: UInt32(rounds))
  }
}

extension FederationConfig {
  /// How every node of the federation trains (its seed aside): the federation's batch and peak learning rate,
  /// warmup, then a cosine to a tenth of it over all the rounds' inner steps.
  public var trainSettings: TrainSettings {
    var s = TrainSettings()
    s.preset = preset
    s.batch = batch
    s.steps = totalInnerSteps
    s.maxLR = Float(learningRate)
    s.minLR = Float(learningRate) / 10
    s.warmupSteps = min(20, innerSteps(round: 1))
    s.evalEvery = 0
    return s
  }
}

extension FederationConfig {
  /// How every node of a fine-tuning federation trains (`[finetune]`): its method, adapters (`lora`, with the
  /// template's token rows) and template; `trainSettings`' batch and schedule; no weight decay (the adapters
  /// start at the base).
  public func fineTuneSettings(seed: UInt64, precision: Precision?, lora: LoRASettings?) -> FineTuneSettings {
    var s = FineTuneSettings()
    if let ft = fineTune {
      s.method = ft.method
      s.template = ft.template
    }
    s.lora = lora
    // The schedule is the pre-training nodes' (one place decides it).
    let t = trainSettings
    (s.batch, s.steps, s.maxLR, s.minLR, s.warmupSteps) = (t.batch, t.steps, t.maxLR, t.minLR, t.warmupSteps)
    s.seed = seed
    s.precision = precision
    return s
  }
}
