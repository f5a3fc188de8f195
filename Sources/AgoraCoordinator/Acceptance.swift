import AgoraRounds
import Foundation

/// Why the coordinator refused a decrypted, authentic update before it reached the round's sum.
public enum UpdateRefusal: Error, Equatable, CustomStringConvertible {
  /// The payload is not in the federation's update format (`rounds.compression`).
  case format(got: String, expected: String)
  /// More steps than the round asked for, or more tokens than those steps can hold.
  case claims(String)
  /// Δ = 0: the update changes nothing (and would only dilute the round's mean).
  case empty
  /// ‖Δ‖ above the round's bound.
  case norm(Float, bound: Float, basis: String)
  /// The update points against, or across, the last outer step.
  case direction(Float, bound: Float, basis: String)
  /// Applied to the current version, the update raises the loss on the languages it says it trained on.
  case score(before: Double, after: Double, bound: Double, languages: [String])

  public var description: String {
    switch self {
    case .format(let g, let e): return "update format \(g), the federation takes \(e)"
    case .claims(let s): return s
    case .empty: return "the update is all zeros: it changes nothing"
    case .norm(let n, let b, let basis): return String(format: "update norm %.6g exceeds the bound %.6g (%@)", n, b, basis)
    case .direction(let c, let b, let basis):
      return String(format: "the update's cosine with the last outer step is %+.4f, below %+.4f (%@)", c, b, basis)
    case .score(let b, let a, let bound, let ls):
      return String(format: "applied to the current version, the update takes %@ from %.4f to %.4f bits/byte, above %.4f: worse on the languages it was trained on",
                    ls.joined(separator: ", "), b, a, bound)
    }
  }
}

/// Which authentic, finite updates of a round reach its sum (SPEC §7, "What the coordinator checks").
///
/// The norm bound holds from the first update of a round on and does not depend on the updates of the round
/// itself: it is `factor` × the median norm of the updates accepted in the last `window` rounds (a median,
/// so fewer than half of them can move it), or, before any round has been accepted, what `H` AdamW steps at
/// the peak learning rate can do at most in RMS: ‖Δ‖ ≤ H · lr · √P (AdamW's per-coordinate step is about lr
/// at most). It keeps `window` rounds of norms, a few numbers per node: no memory of the model's size.
///
/// The direction bound (off unless `cosineFactor` > 0) holds once there is a last outer step u (from the second
/// round on): an update whose cosine with u is negative, or below `cosineFactor` × the median cosine of the
/// updates accepted in the last `window` rounds, is refused. Honest updates mostly point along the federation's
/// recent steps (+0.17 … +0.58 in EXPERIMENTS.md's runs) and a sign-flipped one against them, but after a step
/// that overshot, or one made without a node's languages, honest updates point against it too (−0.25 seen):
/// so it is off by default, and the score (`Coordinator`, `rounds.score_updates`) is the default direction check.
public struct AcceptanceRule: Sendable {
  public var factor: Float
  public var cosineFactor: Float
  public var window: Int
  /// Norms of the on-time updates accepted in the last rounds, oldest first.
  public private(set) var history: [[Float]] = []
  /// Their cosines with the outer step before them (rounds that had one), oldest first.
  public private(set) var cosines: [[Float]] = []

  public init(factor: Float = 4, cosineFactor: Float = 0, window: Int = 3, history: [[Float]] = [], cosines: [[Float]] = []) {
    self.factor = factor
    self.cosineFactor = cosineFactor
    self.window = window
    self.history = Array(history.suffix(window))
    self.cosines = Array(cosines.suffix(window))
  }

  static func median(_ xs: [Float]) -> Float? {
    let v = xs.sorted()
    guard !v.isEmpty else { return nil }
    return v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
  }

  /// The least cosine with the last outer step an update may have (and in words).
  public func cosineBound() -> (Float, String) {
    guard let m = AcceptanceRule.median(cosines.flatMap { $0 }), cosineFactor > 0, m > 0 else { return (0, "it may not point against it") }
    return (cosineFactor * m, String(format: "%.2f× the median %+.4f of the last %d rounds' updates", cosineFactor, m, cosines.count))
  }

  /// Checks an update's cosine with the last outer step (nil: there is none yet, nothing to check); a
  /// `cosineFactor` of 0 turns the check off.
  public func checkDirection(_ cosine: Float?) throws {
    guard let c = cosine, cosineFactor > 0 else { return }
    let (b, basis) = cosineBound()
    guard c.isFinite, c >= b else { throw UpdateRefusal.direction(c, bound: b, basis: basis) }
  }

  /// The bound on ‖Δ‖ for a round (and in words, for the refusal): from past rounds, or from the optimizer.
  public func bound(innerSteps: Int, learningRate: Double, parameters: Int) -> (Float, String) {
    let past = history.flatMap { $0 }
    if let median = AcceptanceRule.median(past) {
      return (factor * median, String(format: "%.0f× the median %.6g of the last %d rounds' %d updates", factor, median, history.count, past.count))
    }
    let b = Float(Double(innerSteps) * learningRate * Double(parameters).squareRoot())
    return (b, String(format: "no past round yet: H·lr·√P = %d · %g · √%d", innerSteps, learningRate, parameters))
  }

  /// Checks what the update claims and its size. `norm` is ‖Δ‖ of the decoded payload.
  public func check(format: DeltaFormat, expected: DeltaFormat, norm: Float, steps: Int, tokens: UInt64, innerSteps: Int, batch: Int, context: Int,
                    learningRate: Double, parameters: Int) throws {
    guard format == expected else { throw UpdateRefusal.format(got: format.name, expected: expected.name) }
    guard steps >= 1, steps <= innerSteps else { throw UpdateRefusal.claims("the update claims \(steps) steps; the round asked for 1 to \(innerSteps)") }
    let most = UInt64(steps) * UInt64(batch) * UInt64(context)
    guard tokens >= 1, tokens <= most else {
      throw UpdateRefusal.claims("the update claims \(tokens) tokens; \(steps) steps of batch \(batch) × context \(context) hold 1 to \(most)")
    }
    guard norm > 0 else { throw UpdateRefusal.empty }
    let (b, basis) = bound(innerSteps: innerSteps, learningRate: learningRate, parameters: parameters)
    guard norm <= b else { throw UpdateRefusal.norm(norm, bound: b, basis: basis) }
  }

  /// Ends a round: the norms (and cosines) of its accepted on-time updates join the history (a round with none
  /// adds nothing).
  public mutating func endRound(accepted norms: [Float], cosines cs: [Float] = []) {
    if !norms.isEmpty {
      history.append(norms)
      if history.count > window { history.removeFirst(history.count - window) }
    }
    if !cs.isEmpty {
      cosines.append(cs)
      if cosines.count > window { cosines.removeFirst(cosines.count - window) }
    }
  }
}
