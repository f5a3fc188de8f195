import AgoraTensor

/// The coordinator's outer optimizer: it turns the weighted mean pseudo-gradient Δ̄ into the next version.
///
/// - FedAvg: θ ← θ − lr·Δ̄ (lr = 1 is plain model averaging).
/// - DiLoCo (Nesterov momentum, as DiLoCo and INTELLECT-1: lr 0.7, μ 0.9): m ← μ·m + Δ̄; θ ← θ − lr·(Δ̄ + μ·m).
/// - FedAdam (Reddi et al.): m ← β1·m + (1−β1)·Δ̄; v ← β2·v + (1−β2)·Δ̄²; θ ← θ − lr·m/(√v + ε).
/// Its state (m, v) is kept with each version so a restarted coordinator continues exactly.
public final class OuterOptimizer {
  public enum Kind: String, Sendable, CaseIterable { case fedavg, diloco, fedadam }

  public let kind: Kind
  public var lr: Float
  public var momentum: Float
  public var beta2: Float = 0.99
  public var eps: Float = 1e-3
  public let m: FloatBuffer
  public let v: FloatBuffer

  /// The buffers a version keeps as its optimizer state, in order (none for FedAvg).
  public var state: [FloatBuffer] {
    switch kind {
    case .fedavg: return []
    case .diloco: return [m]
    case .fedadam: return [m, v]
    }
  }

  /// With `momentumInMemory: false` the caller keeps m elsewhere (the coordinator streams it from and to
  /// disk, `MomentumStream`) and calls `step(slice:…)` with it; v (FedAdam) is always in memory.
  public init(kind: Kind, count: Int, lr: Float, momentum: Float, momentumInMemory: Bool = true) {
    self.kind = kind
    self.lr = lr
    self.momentum = momentum
    m = FloatBuffer(count: kind == .fedavg || !momentumInMemory ? 0 : count)
    v = FloatBuffer(count: kind == .fedadam ? count : 0)
  }

  /// Whether this optimizer has a first-moment state m (DiLoCo, FedAdam).
  public var hasMomentum: Bool { kind != .fedavg }

  /// Applies the mean pseudo-gradient to the parameters in place (exactly, in fp32).
  public func apply(params: FloatBuffer, meanDelta: FloatBuffer) {
    step(meanDelta)
    let p = params.pointer, u = meanDelta.pointer
    Parallel.forRange(params.count, minChunk: 16384) { s, e in for i in s..<e { p[i] -= u[i] } }
  }

  /// Updates the optimizer state from the mean pseudo-gradient and turns the buffer, in place, into the step
  /// u that makes the next version θ − u (so a version patch can carry u, quantised).
  public func step(_ buffer: FloatBuffer) {
    precondition(m.count == (hasMomentum ? buffer.count : 0), "momentum kept outside: use step(slice:)")
    let d = buffer.pointer, mp = m.pointer
    Parallel.forRange(buffer.count, minChunk: 16384) { s, e in
      self.step(slice: d + s, m: mp + s, offset: s, count: e - s)
    }
  }

  /// `step` on elements offset ..< offset + count: `d` and `m` point at element `offset` of the mean Δ
  /// (turned into u in place) and of the momentum (updated in place); v is this optimizer's own.
  public func step(slice d: UnsafeMutablePointer<Float>, m mp: UnsafeMutablePointer<Float>, offset: Int, count: Int) {
    let (lr, mu, b2, eps) = (self.lr, momentum, beta2, self.eps)
    switch kind {
    case .fedavg:
      for i in 0..<count { d[i] = lr * d[i] }
    case .diloco:
      for i in 0..<count {
        let mi = mu * mp[i] + d[i]
        mp[i] = mi
        d[i] = lr * (d[i] + mu * mi)
      }
    case .fedadam:
      let vp = v.pointer + offset
      for i in 0..<count {
        let mi = mu * mp[i] + (1 - mu) * d[i]
        let vi = b2 * vp[i] + (1 - b2) * d[i] * d[i]
        mp[i] = mi
        vp[i] = vi
        d[i] = lr * mi / (vi.squareRoot() + eps)
      }
    }
  }
}
