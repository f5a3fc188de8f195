import AgoraTensor
import AgoraTrainer
import Foundation

/// What a round's start and end mean to every party that trains or steps a version: the node, a cluster
/// node's ranks, the simulation (which must do exactly what they do) and the coordinator's version step.
extension FederationConfig {
  /// A node's trainer at the start of a round: θ (the model's parameters, or a fine-tuning federation's adapters) is the round's version, and the inner optimizer state is kept
  /// or partly forgotten as `rounds.inner_state` says (unless `keepMoments`: the node's first round, or a round
  /// whose first steps were trained while the last update uploaded, which began with that).
  package func beginRound(_ trainer: any RoundTraining, at base: FloatBuffer, keepMoments: Bool) {
    trainer.trained.copy(from: base)
    if !keepMoments { forgetMoments(trainer) }
  }

  /// `rounds.inner_state` at a round's start: nothing forgotten (`keep`), the first moment, or both.
  package func forgetMoments(_ trainer: any RoundTraining) {
    if innerState != .keep { trainer.resetOptimizerMoments(secondToo: innerState == .reset) }
  }
}

extension DeltaCodec {
  /// How round `r`'s step is rounded to int8 for the broadcast: stochastically, keyed by the federation's seed and
  /// the round (the coordinator's version step and the simulation round the same way).
  package static func patchRounding(seed: UInt64, round r: Int) -> Rounding {
    .stochastic(seed: seed &* 0x100_0000_01B3 ^ UInt64(r))
  }
}
