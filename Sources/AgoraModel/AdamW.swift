import AgoraTensor

/// AdamW with decoupled weight decay (PyTorch's `torch.optim.AdamW` semantics), no decay on norms and biases.
///
/// The two moments are flat buffers in the parameter layout. `step` is the number of updates already
/// applied, so resuming from a saved state continues exactly.
public final class AdamW {
  public struct Settings: Codable, Equatable, Sendable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    public var eps: Float = 1e-8
    public var weightDecay: Float = 0.1
    public init() {}
  }

  public var settings: Settings
  public let m: FloatBuffer
  public let v: FloatBuffer
  public internal(set) var step: Int = 0
  /// (offset, count, decays) runs of the layout, merged where neighbours agree.
  let runs: [(Int, Int, Bool)]

  public convenience init(layout: ParameterLayout, settings: Settings = .init()) {
    self.init(tensors: layout.tensors, count: layout.count, settings: settings)
  }

  /// An optimizer for any flat buffer of `count` values cut into `tensors` (a model's adapters: `LoRALayout`).
  public init(tensors: [ParameterLayout.Tensor], count: Int, settings: Settings = .init()) {
    self.settings = settings
    m = FloatBuffer(count: count)
    v = FloatBuffer(count: count)
    var r: [(Int, Int, Bool)] = []
    for t in tensors {
      if let last = r.last, last.2 == t.decays, last.0 + last.1 == t.offset {
        r[r.count - 1].1 += t.count
      } else {
        r.append((t.offset, t.count, t.decays))
      }
    }
    runs = r
  }

  /// Restores moments and step count (from a checkpoint).
  public func restore(step: Int, m: [Float], v: [Float]) throws {
    guard m.count == self.m.count, v.count == self.v.count else {
      throw ModelError.mismatch("optimizer state has \(m.count)/\(v.count) values, model needs \(self.m.count)")
    }
    self.step = step
    m.withUnsafeBufferPointer { self.m.pointer.update(from: $0.baseAddress!, count: $0.count) }
    v.withUnsafeBufferPointer { self.v.pointer.update(from: $0.baseAddress!, count: $0.count) }
  }

  /// Applies one update with learning rate `lr` to `params` from `grads`.
  public func update(params: FloatBuffer, grads: FloatBuffer, lr: Float) {
    step += 1
    let b1 = settings.beta1, b2 = settings.beta2, eps = settings.eps
    let bc1 = 1 - pow(b1, Float(step)), bc2 = 1 - pow(b2, Float(step))
    let stepSize = lr / bc1
    let bc2Sqrt = bc2.squareRoot()
    let p = params.pointer, g = grads.pointer, mp = m.pointer, vp = v.pointer
    for (offset, count, decays) in runs {
      let decay: Float = decays ? 1 - lr * settings.weightDecay : 1
      Parallel.forRange(count, minChunk: 16384) { s, e in
        for i in (offset + s)..<(offset + e) {
          let gi = g[i]
          let mi = b1 * mp[i] + (1 - b1) * gi
          let vi = b2 * vp[i] + (1 - b2) * gi * gi
          mp[i] = mi
          vp[i] = vi
          let denom = vi.squareRoot() / bc2Sqrt + eps
          p[i] = p[i] * decay - stepSize * mi / denom
        }
      }
    }
  }
}

@inline(__always) func pow(_ x: Float, _ y: Float) -> Float {
  Float(_powD(Double(x), Double(y)))
}

/// Learning-rate schedule: linear warmup from 0 to `maxLR`, then cosine decay to `minLR` at `totalSteps`.
public struct LRSchedule: Codable, Equatable, Sendable {
  public var maxLR: Float
  public var minLR: Float
  public var warmupSteps: Int
  public var totalSteps: Int

  public init(maxLR: Float, minLR: Float, warmupSteps: Int, totalSteps: Int) {
    self.maxLR = maxLR
    self.minLR = minLR
    self.warmupSteps = warmupSteps
    self.totalSteps = totalSteps
  }

  /// Learning rate for update number `step` (0-based).
  public func lr(at step: Int) -> Float {
    if step < warmupSteps { return maxLR * Float(step + 1) / Float(warmupSteps) }
    if step >= totalSteps { return minLR }
    let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
    let coeff = 0.5 * (1 + _cosD(Double.pi * progress))
    return minLR + Float(coeff) * (maxLR - minLR)
  }
}

/// Scales `grads` so its global L2 norm is at most `maxNorm`; returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ grads: FloatBuffer, maxNorm: Float) -> Float {
  let chunks = Parallel.threads
  var partial = [Double](repeating: 0, count: chunks)
  let g = grads.pointer
  partial.withUnsafeMutableBufferPointer { part in
    Parallel.forChunks(grads.count, chunks: chunks) { k, s, e in
      var acc = Vec()
      var i = s
      while i + 16 <= e { let x = VectorMath.load(g + i); acc += x * x; i += 16 }
      var tail: Float = 0
      while i < e { tail += g[i] * g[i]; i += 1 }
      part[k] = Double(acc.sum()) + Double(tail)
    }
  }
  let norm = Float(partial.reduce(0, +).squareRoot())
  if maxNorm > 0, norm > maxNorm, norm.isFinite {
    let scale = maxNorm / (norm + 1e-6)
    Parallel.forRange(grads.count, minChunk: 16384) { s, e in
      for i in s..<e { g[i] *= scale }
    }
  }
  return norm
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _powD(_ x: Double, _ y: Double) -> Double { Glibc.pow(x, y) }
#else
import Foundation
@inline(__always) func _powD(_ x: Double, _ y: Double) -> Double { Foundation.pow(x, y) }
#endif
