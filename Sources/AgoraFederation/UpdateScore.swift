import AgoraModel
import AgoraTensor
import AgoraTrainer
import Foundation

/// The score an update must pass before it is folded in (SPEC §7.1, check 6). The evaluator's model holds θ
/// (the current version; the coordinator copies it in after each round's evaluation); an update is subtracted
/// from it, the languages the node trained on are scored on their first `windows` validation windows, and it
/// is added back. Applied to θ, an honest update is the node's own model after its inner steps on those
/// languages, so it does better on them than θ, or about as well late in training (`tolerance`); a
/// sign-flipped update does worse by several percent. Languages without evaluation text are not scored (nor
/// is an update that names none of them). Memory: none beyond the evaluator's model; time: a forward pass of
/// the windows per language.
final class UpdateScorer {
  let model: GPT
  let evaluator: Evaluator
  let windows: Int
  let tolerance: Double
  /// Bits per byte of the current version per language on the scoring windows (taken once per round, as needed).
  private var base: [String: Double] = [:]

  init(model: GPT, evaluator: Evaluator, windows: Int, tolerance: Double) {
    self.model = model
    self.evaluator = evaluator
    self.windows = windows
    self.tolerance = tolerance
  }

  /// A new round: θ changed (or may have).
  func reset() { base = [:] }

  /// Scores `payload` (an encoded Δ) on `languages` and logs the result. Throws `UpdateRefusal.score` when the
  /// update leaves its languages worse than the tolerance allows.
  func score(_ payload: UnsafeRawBufferPointer, languages: [String], node: String, log: (String) -> Void) throws {
    let langs = Set(languages).intersection(evaluator.corpus.languages)
    guard !langs.isEmpty else { return }
    let t0 = Date()
    let missing = langs.subtracting(base.keys)
    if !missing.isEmpty { for (l, b) in try evaluator.bitsPerByte(model: model, languages: missing, windows: windows) { base[l] = b } }
    try DeltaCodec.decode(payload, into: model.parameters.pointer, count: model.parameters.count, mode: .subtract)
    let after: [(String, Double)]
    do {
      after = try evaluator.bitsPerByte(model: model, languages: langs, windows: windows)
    } catch {
      try DeltaCodec.decode(payload, into: model.parameters.pointer, count: model.parameters.count, mode: .add(1))
      throw error
    }
    try DeltaCodec.decode(payload, into: model.parameters.pointer, count: model.parameters.count, mode: .add(1))
    let scored = after.map(\.0)
    guard !scored.isEmpty else { return }
    let before = scored.map { base[$0] ?? .nan }.reduce(0, +) / Double(scored.count)
    let now = after.map(\.1).reduce(0, +) / Double(after.count)
    log(String(format: "  update of %@ scored on %@: %.4f → %.4f bits/byte (%.0f ms)", node, scored.sorted().joined(separator: ","), before, now,
               Date().timeIntervalSince(t0) * 1000))
    // Worse than the base on its own languages, beyond the noise of a few windows: an honest node's model is not
    // (it trained on them from θ); a sign-flipped update is, by several percent.
    let bound = before * (1 + tolerance)
    guard now <= bound else { throw UpdateRefusal.score(before: before, after: now, bound: bound, languages: scored.sorted()) }
  }
}
