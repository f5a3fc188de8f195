import Foundation

/// A Rényi-DP accountant for client-level differential privacy (DP-FedAvg: each node's update clipped to norm
/// C, Gaussian noise of standard deviation z·C on the sum). Round by round it adds the Rényi divergence of the
/// (subsampled) Gaussian mechanism at a fixed set of orders α, and converts to (ε, δ) with Balle et al. 2020's
/// bound, ε = min over α of RDP(α) − (ln δ + ln α)/(α − 1) + ln((α − 1)/α) — the same orders, formulas and
/// conversion as Opacus's RDP accountant (checked against it in the tests).
///
/// RDP of one round at order α, noise multiplier z, sampling rate q (the chance a node takes part):
/// q = 1: α / (2z²); q < 1 (integer α only, Mironov et al. 2019): ln(Σ_k C(α,k) (1−q)^(α−k) q^k e^((k²−k)/(2z²))) / (α − 1).
public struct PrivacyAccountant: Sendable, Equatable {
  /// Opacus's default orders: 1.1 … 10.9 by 0.1, then 12 … 63.
  public static let orders: [Double] = (1...99).map { 1 + Double($0) / 10 } + (12...63).map(Double.init)
  /// Accumulated RDP per order (infinity where an order does not apply).
  public private(set) var rdp: [Double]
  public private(set) var rounds = 0

  public init() { rdp = [Double](repeating: 0, count: PrivacyAccountant.orders.count) }

  /// RDP of one round of the Gaussian mechanism with noise multiplier `z`, sampling rate `q`, at order `alpha`.
  public static func roundRDP(q: Double, z: Double, alpha: Double) -> Double {
    if q <= 0 { return 0 }
    if z <= 0 { return .infinity }
    if q >= 1 { return alpha / (2 * z * z) }
    guard alpha == alpha.rounded(), alpha >= 2 else { return .infinity }  // fractional orders: not used for q < 1
    let a = Int(alpha)
    // log Σ_k C(a,k) (1−q)^(a−k) q^k exp((k² − k)/(2z²)), in log space.
    var terms: [Double] = []
    var logBinom = 0.0
    for k in 0...a {
      if k > 0 { logBinom += log(Double(a - k + 1)) - log(Double(k)) }
      terms.append(logBinom + Double(a - k) * log1p(-q) + Double(k) * log(q) + Double(k * k - k) / (2 * z * z))
    }
    let m = terms.max()!
    let logA = m + log(terms.reduce(0) { $0 + exp($1 - m) })
    return logA / (alpha - 1)
  }

  /// Accounts one round.
  public mutating func add(q: Double = 1, z: Double) {
    for (i, a) in PrivacyAccountant.orders.enumerated() { rdp[i] += PrivacyAccountant.roundRDP(q: q, z: z, alpha: a) }
    rounds += 1
  }

  /// (ε, the order that gives it) at `delta`; ε = ∞ before any noise.
  public func epsilon(delta: Double) -> (epsilon: Double, order: Double) {
    var best = (Double.infinity, Double.nan)
    for (i, a) in PrivacyAccountant.orders.enumerated() where rdp[i].isFinite {
      let e = rdp[i] - (log(delta) + log(a)) / (a - 1) + log((a - 1) / a)
      if e < best.0 { best = (e, a) }
    }
    return rounds == 0 ? (0, .nan) : best
  }
}
