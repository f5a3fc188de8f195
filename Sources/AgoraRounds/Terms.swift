import AgoraCrypto
import AgoraModel
import AgoraTrainer
import AgoraWire
import Foundation

extension FederationConfig {
  /// What a party of this federation trains with (JOIN carries it; the coordinator compares): the tokenizer
  /// and the model shape by hash, and the inner training settings.
  public func terms(tokenizer: Tokenizer, model: GPTConfig) throws -> TrainingTerms {
    TrainingTerms(tokenizerHash: Sodium.blake2b([UInt8](tokenizer.jsonData())), modelHash: Sodium.blake2b(Checkpoint.weightsHeader(model)),
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
