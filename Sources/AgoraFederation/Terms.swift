import AgoraCrypto
import AgoraModel
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
