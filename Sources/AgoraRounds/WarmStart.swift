import AgoraData
import AgoraModel
import AgoraTensor
import AgoraTrainer
import Foundation

/// Version 0 trained on the federation's public corpus before round 1 (`model.warm_start_steps`): federated
/// averaging from a random initialisation loses most of what the nodes learn in the first rounds (their models
/// drift apart faster than they agree), and a start every party may train on — public text — is one the
/// federation can legitimately make. The coordinator trains it (AdamW at the federation's batch and peak
/// learning rate, warmup, cosine to a tenth), deterministically from the seed, and records it.
public enum WarmStart {
  /// Trains `params` (θ0, the seeded initialisation) for `fed.warmStartSteps` steps on `fed.publicData`; returns
  /// the tokens it trained on.
  public static func train(_ params: FloatBuffer, fed: FederationConfig, tokenizer: Tokenizer, cacheDir: String,
                           log: (String) -> Void) throws -> Int {
    let sources = try LanguageSource.discover(fed.publicData)
    let corpus = try TokenizedCorpus(sources: sources, tokenizer: tokenizer, tokenizerPath: fed.tokenizer, cacheDir: cacheDir)
    // The nodes' settings (preset, peak learning rate, cosine to a tenth), over the warm start's steps and batch.
    var s = fed.trainSettings
    s.batch = fed.warmStartBatch
    s.steps = fed.warmStartSteps
    s.warmupSteps = min(20, fed.warmStartSteps)
    s.seed = fed.seed
    let trainer = try Trainer(settings: s, tokenizer: tokenizer, corpus: corpus)
    trainer.model.parameters.copy(from: params)
    let t0 = Date()
    var loss: Float = 0
    for i in 0..<fed.warmStartSteps {
      loss = try trainer.step().loss
      if (i + 1) % 100 == 0 || i + 1 == fed.warmStartSteps {
        log(String(format: "  warm start: step %d/%d, loss %.3f (%.0f s)", i + 1, fed.warmStartSteps, loss, Date().timeIntervalSince(t0)))
      }
    }
    params.copy(from: trainer.model.parameters)
    return fed.warmStartSteps * trainer.model.B * trainer.model.T
  }
}
