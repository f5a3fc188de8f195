import AgoraRounds
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
  let scoring: VersionScoring
  let windows: Int
  let tolerance: Double
  /// k of the collateral check (0: off). A targeted adversary trains honestly on its own languages, which then
  /// improve, and rides a component on its update that harms a language it does not hold (SPEC §7.1, check 6).
  /// Every update is therefore also scored on the languages it did not train on. Applied alone, an honest update
  /// harms them a little (it was trained elsewhere), in proportion to how far it moved: what is compared is its
  /// *collateral ratio* on ℓ, the relative rise of ℓ's bits per byte over the relative gain on its own languages
  /// (at least 0.5%). From the third round on, the bound on ℓ is the median ratio m on ℓ of the updates within
  /// their bounds in the last 3 rounds plus max(k × their median absolute deviation, 0.5, 2.5 |m|); an update
  /// above it on some language is weighted down by the least bound ÷ ratio over those languages, so that what it
  /// does there per unit of its own gain counts no more than the bound allows. Nothing is refused by it: an honest
  /// update that gained little (a donor's, on a shard the model already knows) is weighted down, not lost. The
  /// bound is fixed before the round's first update; fewer than half of the recent updates cannot move it.
  var collateral: Double { collateralBounds.k }
  /// Bits per byte of the current version per language on the scoring windows (taken once per round, as needed).
  private var base: [String: Double] = [:]
  /// The collateral check's history and this round's bounds.
  private(set) var collateralBounds: CollateralBounds
  /// The least own-language gain (%) a ratio divides by: a flat update late in training is not a small divisor.
  static let leastGain = 0.5

  init(scoring: VersionScoring, windows: Int, tolerance: Double, collateral: Double = 0) {
    self.scoring = scoring
    self.windows = windows
    self.tolerance = tolerance
    collateralBounds = CollateralBounds(k: collateral)
  }

  /// A new round: θ changed (or may have). The collateral bounds of the new round are fixed here.
  func reset() {
    base = [:]
    collateralBounds.newRound()
  }

  /// Scores `payload` (an encoded Δ) on `languages` and logs the result. Throws `UpdateRefusal.score` when the
  /// update leaves its languages worse than the tolerance allows; returns the factor its weight takes from the
  /// collateral check (1 within every bound, or without the check).
  @discardableResult
  func score(_ payload: UnsafeRawBufferPointer, languages: [String], node: String, log: (String) -> Void) throws -> Double {
    let (model, target, evaluator) = (scoring.model, scoring.target, scoring.scoring)
    let langs = Set(languages).intersection(evaluator.languages)
    guard !langs.isEmpty else { return 1 }
    let others = collateral > 0 ? Set(evaluator.languages).subtracting(langs) : []
    let all = langs.union(others)
    let t0 = Date()
    let missing = all.subtracting(base.keys)
    if !missing.isEmpty { for (l, b) in try evaluator.bitsPerByte(model: model, languages: missing, windows: windows) { base[l] = b } }
    try DeltaCodec.decode(payload, into: target.pointer, count: target.count, mode: .subtract)
    let after: [(String, Double)]
    do {
      after = try evaluator.bitsPerByte(model: model, languages: all, windows: windows)
    } catch {
      try DeltaCodec.decode(payload, into: target.pointer, count: target.count, mode: .add(1))
      throw error
    }
    try DeltaCodec.decode(payload, into: target.pointer, count: target.count, mode: .add(1))
    let own = after.filter { langs.contains($0.0) }
    let scored = own.map(\.0)
    guard !scored.isEmpty else { return 1 }
    let before = scored.map { base[$0] ?? .nan }.reduce(0, +) / Double(scored.count)
    let now = own.map(\.1).reduce(0, +) / Double(own.count)
    // What it did to each language it did not train on (%, relative to the current version), and the one that
    // came closest to its bound (or, before bounds, the one it harmed most).
    let changes = Dictionary(uniqueKeysWithValues: after.filter { others.contains($0.0) }.map { ($0.0, ($0.1 / (base[$0.0] ?? .nan) - 1) * 100) })
    let gain = max((before - now) / before * 100, UpdateScorer.leastGain)
    let ratios = changes.mapValues { $0 / gain }
    let bounds = collateralBounds.bounds
    let worst = ratios.max { a, b in (a.value - (bounds[a.key] ?? 0)) < (b.value - (bounds[b.key] ?? 0)) }
    log(String(format: "  update of %@ scored on %@: %.4f → %.4f bits/byte", node, scored.sorted().joined(separator: ","), before, now)
        + (worst.map { String(format: "; elsewhere at worst %@ %+.2f%% (ratio %.2f", $0.key, changes[$0.key] ?? .nan, $0.value)
                       + (bounds[$0.key].map { String(format: ", bound %.2f)", $0) } ?? ")") } ?? "")
        + (ProcessInfo.processInfo.environment["AGORA_TRACE"] == nil ? "" : "; elsewhere " + after.filter { others.contains($0.0) }.sorted { $0.0 < $1.0 }
            .map { String(format: "%@ %+.2f%%", $0.0, changes[$0.0] ?? .nan) }.joined(separator: " "))
        + String(format: " (%.0f ms)", Date().timeIntervalSince(t0) * 1000))
    // Worse than the base on its own languages, beyond the noise of a few windows: an honest node's model is not
    // (it trained on them from θ); a sign-flipped update is, by several percent.
    let bound = before * (1 + tolerance)
    guard now <= bound else { throw UpdateRefusal.score(before: before, after: now, bound: bound, languages: scored.sorted()) }
    let factor = collateralBounds.factor(ratios)
    if factor < 1, let v = collateralBounds.violation(ratios) {
      log(String(format: "  update of %@ weighted ×%.3f: on %@, a language it did not train on, it raises bits/byte by %.2f%% for a %.2f%% gain on its own "
                 + "(ratio %.2f, bound %.2f)", node, factor, v.language, changes[v.language] ?? .nan, gain, v.ratio, v.bound))
    } else {
      collateralBounds.passed(ratios)
    }
    return factor
  }
}

/// The collateral check's bounds (SPEC §7.1, check 6). It keeps, for the last 3 rounds, the collateral ratios on
/// each language of the updates that stayed within their bounds (a few numbers per update), and at each round's
/// start fixes the bound of each language with at least 3 of them, once 2 rounds are kept: m + max(k · MAD, 0.5,
/// 2.5 |m|), m and MAD the median and the median absolute deviation. An update whose ratio on a language exceeds
/// its bound is weighted down by bound ÷ ratio (the least over such languages), and its ratios are not kept.
struct CollateralBounds {
  /// k (0: no bounds).
  let k: Double
  private(set) var history: [[String: [Double]]] = []
  private var current: [String: [Double]] = [:]
  /// This round's bound per language; empty before two rounds are kept.
  private(set) var bounds: [String: Double] = [:]
  static let rounds = 3
  /// The least margin above the median: a few windows are a noisy sample.
  static let margin = 0.5
  /// … and at least this share of the median itself: nodes of other languages harm ℓ by different amounts, more
  /// than the pooled spread says.
  static let relative = 2.5

  init(k: Double) { self.k = k }

  /// Closes the round that passed and fixes the next one's bounds.
  mutating func newRound() {
    if !current.isEmpty { history.append(current) }
    current = [:]
    history = Array(history.suffix(CollateralBounds.rounds))
    bounds = [:]
    guard k > 0, history.count >= 2 else { return }
    var pooled: [String: [Double]] = [:]
    for round in history { for (l, v) in round { pooled[l, default: []] += v } }
    for (l, v) in pooled where v.count >= 3 {
      let m = CollateralBounds.median(v)
      let mad = CollateralBounds.median(v.map { abs($0 - m) })
      bounds[l] = m + max(k * mad, CollateralBounds.margin, CollateralBounds.relative * abs(m))
    }
  }

  /// The language whose ratio is furthest above its bound (relative to the bound), if any is above.
  func violation(_ ratios: [String: Double]) -> (language: String, ratio: Double, bound: Double)? {
    var worst: (language: String, ratio: Double, bound: Double)? = nil
    for (l, r) in ratios.sorted(by: { $0.key < $1.key }) {
      guard let b = bounds[l], !(r <= b) else { continue }
      if !r.isFinite { return (l, r, b) }
      if worst.map({ r / b > $0.ratio / $0.bound }) ?? true { worst = (l, r, b) }
    }
    return worst
  }

  /// The factor an update's weight takes: 1 within every bound, else the least bound ÷ ratio over the languages
  /// above theirs (0 for a ratio that is not a number).
  func factor(_ ratios: [String: Double]) -> Double {
    guard let v = violation(ratios) else { return 1 }
    return v.ratio.isFinite ? v.bound / v.ratio : 0
  }

  /// An update within its bounds: its ratios join this round's.
  mutating func passed(_ ratios: [String: Double]) {
    for (l, r) in ratios where r.isFinite { current[l, default: []].append(r) }
  }

  static func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
  }
}
