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

  public var description: String {
    switch self {
    case .format(let g, let e): return "update format \(g), the federation takes \(e)"
    case .claims(let s): return s
    case .empty: return "the update is all zeros: it changes nothing"
    case .norm(let n, let b, let basis): return String(format: "update norm %.6g exceeds the bound %.6g (%@)", n, b, basis)
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
public struct AcceptanceRule: Sendable {
  public var factor: Float
  public var window: Int
  /// Norms of the on-time updates accepted in the last rounds, oldest first.
  public private(set) var history: [[Float]] = []

  public init(factor: Float = 4, window: Int = 3, history: [[Float]] = []) {
    self.factor = factor
    self.window = window
    self.history = Array(history.suffix(window))
  }

  /// The bound on ‖Δ‖ for a round (and in words, for the refusal): from past rounds, or from the optimizer.
  public func bound(innerSteps: Int, learningRate: Double, parameters: Int) -> (Float, String) {
    let past = history.flatMap { $0 }.sorted()
    if !past.isEmpty {
      let median = past.count % 2 == 1 ? past[past.count / 2] : (past[past.count / 2 - 1] + past[past.count / 2]) / 2
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

  /// Ends a round: the norms of its accepted on-time updates join the history (a round with none adds nothing).
  public mutating func endRound(accepted norms: [Float]) {
    guard !norms.isEmpty else { return }
    history.append(norms)
    if history.count > window { history.removeFirst(history.count - window) }
  }
}
