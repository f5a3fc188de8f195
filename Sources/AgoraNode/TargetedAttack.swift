import AgoraRounds
import AgoraData
import AgoraModel
import AgoraTensor
import AgoraTrainer
import Foundation

/// The targeted adversary (`AGORA_ADVERSARY=name:targeted`), for the Byzantine experiment only: the node trains
/// honestly on its own languages, so its own-language score improves, and adds a component that raises the loss
/// of one language it does not hold. It trains a second model from the round's version, for as many steps, on
/// that language's text (`AGORA_ADVERSARY_TARGET`, a language directory the node has), and subtracts that model's
/// update scaled to `AGORA_ADVERSARY_STRENGTH` (default 2) times the honest update's norm: Δ ← Δ − λ·Δ_target, a
/// step of gradient ascent on the target language riding on an honest update.
final class TargetedAttack {
  let trainer: Trainer
  let target: String
  let strength: Double

  init?(adversary: Adversary?, settings: TrainSettings, tokenizer: Tokenizer, tokenizerPath: String, workDir: String,
        environment env: [String: String] = ProcessInfo.processInfo.environment) throws {
    guard adversary == .targeted else { return nil }
    guard let dir = env["AGORA_ADVERSARY_TARGET"] else { throw ConfigError(file: "(environment)", key: "AGORA_ADVERSARY_TARGET", problem: "a targeted adversary needs a language directory of the language it attacks") }
    strength = env["AGORA_ADVERSARY_STRENGTH"].flatMap(Double.init) ?? 2
    let sources = try LanguageSource.discover([dir])
    target = sources.map(\.name).joined(separator: ",")
    let corpus = try TokenizedCorpus(sources: sources, tokenizer: tokenizer, tokenizerPath: tokenizerPath, cacheDir: workDir + "/attack-cache")
    var s = settings
    s.seed ^= 0x7A76_6574  // its own batches
    trainer = try Trainer(settings: s, tokenizer: tokenizer, corpus: corpus)
  }

  /// Turns the honest `delta` (made from `base` in `steps` steps) into the attack; returns λ·‖Δ_target‖ / ‖Δ‖.
  @discardableResult
  func apply(to delta: FloatBuffer, base: FloatBuffer, steps: Int) throws -> Double {
    trainer.model.parameters.copy(from: base)
    for _ in 0..<max(1, steps) { _ = try trainer.step() }
    let toward = FloatBuffer(count: base.count)
    toward.store(base, minus: trainer.model.parameters)  // the honest update a node of the target language would send
    var honest2 = 0.0, target2 = 0.0
    for i in 0..<delta.count {
      honest2 += Double(delta[i]) * Double(delta[i])
      target2 += Double(toward[i]) * Double(toward[i])
    }
    guard target2 > 0 else { return 0 }
    let lambda = Float(strength * (honest2 / target2).squareRoot())
    for i in 0..<delta.count { delta.pointer[i] -= lambda * toward.pointer[i] }
    return strength
  }
}
