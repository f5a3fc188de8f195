import AgoraCrypto
import AgoraModel
import AgoraRegistry
import AgoraTensor
import AgoraWire
import Foundation

/// The score an update must pass before it is folded in (SPEC §7.1, check 6).
extension CoordinatorService {
  /// Scores an update before it is folded in: the evaluator's model holds θ (the current version); the update is
  /// subtracted from it, the languages the node trained on are scored on their first `score_windows` validation
  /// windows, and it is added back. Applied to θ, an honest update is the node's own model after its inner
  /// steps on those languages, so it must do better on them than θ; a sign-flipped or random update does worse.
  /// Languages without evaluation text are not scored (nor is an update that names none of them). Memory: none
  /// beyond the evaluator's model; time: a forward pass of the windows per language.
  func score(_ payload: UnsafeRawBufferPointer, languages: [String], node: String) throws {
    guard let (model, ev) = evaluator else { return }
    let langs = Set(languages).intersection(ev.corpus.languages)
    guard !langs.isEmpty else { return }
    let windows = config.federation.scoreWindows
    let t0 = Date()
    let missing = langs.subtracting(baseScores.keys)
    if !missing.isEmpty { for (l, b) in try ev.bitsPerByte(model: model, languages: missing, windows: windows) { baseScores[l] = b } }
    try DeltaCodec.decode(payload, into: model.parameters.pointer, count: model.parameters.count, mode: .subtract)
    let after: [(String, Double)]
    do {
      after = try ev.bitsPerByte(model: model, languages: langs, windows: windows)
    } catch {
      try DeltaCodec.decode(payload, into: model.parameters.pointer, count: model.parameters.count, mode: .add(1))
      throw error
    }
    try DeltaCodec.decode(payload, into: model.parameters.pointer, count: model.parameters.count, mode: .add(1))
    let scored = after.map(\.0)
    guard !scored.isEmpty else { return }
    let before = scored.map { baseScores[$0] ?? .nan }.reduce(0, +) / Double(scored.count)
    let now = after.map(\.1).reduce(0, +) / Double(after.count)
    log(String(format: "  update of %@ scored on %@: %.4f → %.4f bits/byte (%.0f ms)", node, scored.sorted().joined(separator: ","), before, now,
               Date().timeIntervalSince(t0) * 1000))
    // Worse than the base on its own languages, beyond the noise of a few windows: an honest node's model is not
    // (it trained on them from θ); a sign-flipped update is, by several percent.
    let bound = before * (1 + config.federation.scoreTolerance)
    guard now <= bound else { throw UpdateRefusal.score(before: before, after: now, bound: bound, languages: scored.sorted()) }
  }
}
