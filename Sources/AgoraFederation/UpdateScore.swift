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
  /// k of the collateral check (0: off). A targeted adversary trains honestly on its own languages, which then
  /// improve, and rides a component on its update that harms a language it does not hold (SPEC §7.1, check 6).
  /// Every update is therefore also scored on the languages it did not train on: applied alone, an honest update
  /// harms them a little (it was trained elsewhere), by an amount that varies by language and round. From the
  /// third round on, an update is refused if it raises a language ℓ it did not train on by more than the median
  /// of what the updates that passed did to ℓ in the last 3 rounds plus max(k × their median absolute deviation,
  /// 2 points of a percent). The bound is fixed before the round's first update, and fewer than half of the
  /// recent updates cannot move it.
  let collateral: Double
  /// Bits per byte of the current version per language on the scoring windows (taken once per round, as needed).
  private var base: [String: Double] = [:]
  /// Per round (the last 3), per language, the relative change (%) that the updates that passed made to a
  /// language they did not train on; and this round's so far.
  private var history: [[String: [Double]]] = []
  private var current: [String: [Double]] = [:]
  /// This round's collateral bound per language (%), fixed at `reset`; empty before two rounds of history.
  private(set) var bounds: [String: Double] = [:]
  /// The least margin above the median (points of a percent): a few windows are a noisy sample.
  static let collateralMargin = 2.0

  init(model: GPT, evaluator: Evaluator, windows: Int, tolerance: Double, collateral: Double = 0) {
    self.model = model
    self.evaluator = evaluator
    self.windows = windows
    self.tolerance = tolerance
    self.collateral = collateral
  }

  /// A new round: θ changed (or may have). The collateral bounds of the new round are fixed here.
  func reset() {
    base = [:]
    if !current.isEmpty { history.append(current) }
    current = [:]
    history = Array(history.suffix(3))
    bounds = [:]
    guard collateral > 0, history.count >= 2 else { return }
    var pooled: [String: [Double]] = [:]
    for round in history { for (l, v) in round { pooled[l, default: []] += v } }
    for (l, v) in pooled where v.count >= 3 {
      let m = UpdateScorer.median(v)
      let mad = UpdateScorer.median(v.map { abs($0 - m) })
      bounds[l] = m + max(collateral * mad, UpdateScorer.collateralMargin)
    }
  }

  static func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
  }

  /// Scores `payload` (an encoded Δ) on `languages` and logs the result. Throws `UpdateRefusal.score` when the
  /// update leaves its languages worse than the tolerance allows.
  func score(_ payload: UnsafeRawBufferPointer, languages: [String], node: String, log: (String) -> Void) throws {
    let langs = Set(languages).intersection(evaluator.corpus.languages)
    guard !langs.isEmpty else { return }
    let others = collateral > 0 ? Set(evaluator.corpus.languages).subtracting(langs) : []
    let all = langs.union(others)
    let t0 = Date()
    let missing = all.subtracting(base.keys)
    if !missing.isEmpty { for (l, b) in try evaluator.bitsPerByte(model: model, languages: missing, windows: windows) { base[l] = b } }
    try DeltaCodec.decode(payload, into: model.parameters.pointer, count: model.parameters.count, mode: .subtract)
    let after: [(String, Double)]
    do {
      after = try evaluator.bitsPerByte(model: model, languages: all, windows: windows)
    } catch {
      try DeltaCodec.decode(payload, into: model.parameters.pointer, count: model.parameters.count, mode: .add(1))
      throw error
    }
    try DeltaCodec.decode(payload, into: model.parameters.pointer, count: model.parameters.count, mode: .add(1))
    let own = after.filter { langs.contains($0.0) }
    let scored = own.map(\.0)
    guard !scored.isEmpty else { return }
    let before = scored.map { base[$0] ?? .nan }.reduce(0, +) / Double(scored.count)
    let now = own.map(\.1).reduce(0, +) / Double(own.count)
    // What it did to each language it did not train on (%, relative to the current version), and the one that
    // came closest to its bound (or, before bounds, the one it harmed most).
    let changes = Dictionary(uniqueKeysWithValues: after.filter { others.contains($0.0) }.map { ($0.0, ($0.1 / (base[$0.0] ?? .nan) - 1) * 100) })
    let worst = changes.max { a, b in (a.value - (bounds[a.key] ?? 0)) < (b.value - (bounds[b.key] ?? 0)) }
    log(String(format: "  update of %@ scored on %@: %.4f → %.4f bits/byte", node, scored.sorted().joined(separator: ","), before, now)
        + (worst.map { String(format: "; elsewhere at worst %@ %+.2f%%", $0.key, $0.value) + (bounds[$0.key].map { String(format: " (bound %+.2f%%)", $0) } ?? "") } ?? "")
        + (ProcessInfo.processInfo.environment["AGORA_TRACE"] == nil ? "" : "; elsewhere " + after.filter { others.contains($0.0) }.sorted { $0.0 < $1.0 }
            .map { String(format: "%@ %+.2f%%", $0.0, changes[$0.0] ?? .nan) }.joined(separator: " "))
        + String(format: " (%.0f ms)", Date().timeIntervalSince(t0) * 1000))
    // Worse than the base on its own languages, beyond the noise of a few windows: an honest node's model is not
    // (it trained on them from θ); a sign-flipped update is, by several percent.
    let bound = before * (1 + tolerance)
    guard now <= bound else { throw UpdateRefusal.score(before: before, after: now, bound: bound, languages: scored.sorted()) }
    for (l, change) in changes.sorted(by: { $0.key < $1.key }) {
      if let bound = bounds[l], change > bound, let b = base[l] {
        throw UpdateRefusal.collateral(language: l, before: b, after: b * (1 + change / 100), bound: b * (1 + bound / 100))
      }
    }
    for (l, change) in changes where change.isFinite { current[l, default: []].append(change) }
  }
}
