import AgoraTensor
import Foundation

// The layers a LLaMA-style block adds to GPT-2's (issue #18): RMSNorm, rotary position embeddings (Hugging
// Face's `rotate_half` convention, as LlamaForCausalLM computes them) and the SwiGLU gate; its grouped-query
// attention is Layers.swift's, which GPT-2's multi-head attention is a case of. Same conventions as
// Layers.swift: row-major, backward functions accumulate into parameter gradients and, where said, into dinp.

// MARK: - RMSNorm

/// inp (N, C) → out (N, C) = x · r · w with r = 1/√(mean(x²) + eps) kept in rstd (N) for the backward pass.
package func rmsnormForward(_ out: P, _ rstd: P, _ inp: CP, _ w: CP, N: Int, C: Int, eps: Float) {
  Parallel.forRange(N, minChunk: 8) { s, e in
    for i in s..<e {
      let x = inp + i * C, o = out + i * C
      var ss: Float = 0
      for c in 0..<C { ss += x[c] * x[c] }
      let r = 1 / (ss / Float(C) + eps).squareRoot()
      for c in 0..<C { o[c] = x[c] * r * w[c] }
      rstd[i] = r
    }
  }
}

/// dout (N, C) → dinp (N, C) **accumulated**, dw (C) accumulated. dx_c = r·w_c·d_c − r³/C · x_c · Σ_j w_j·d_j·x_j.
func rmsnormBackward(_ dinp: P, _ dw: P, _ dout: CP, _ inp: CP, _ w: CP, _ rstd: CP, N: Int, C: Int, scratch: P) {
  let chunks = Parallel.threads
  scratch.update(repeating: 0, count: chunks * C)
  Parallel.forChunks(N, chunks: chunks) { k, s, e in
    let pdw = scratch + k * C
    for i in s..<e {
      let x = inp + i * C, d = dout + i * C, di = dinp + i * C
      let r = rstd[i]
      var dot: Float = 0
      for c in 0..<C {
        dot += w[c] * d[c] * x[c]
        pdw[c] += x[c] * r * d[c]
      }
      let k3 = r * r * r * dot / Float(C)
      for c in 0..<C { di[c] += r * w[c] * d[c] - k3 * x[c] }
    }
  }
  for k in 0..<min(chunks, N) {
    let pdw = scratch + k * C
    for c in 0..<C { dw[c] += pdw[c] }
  }
}

// MARK: - Rotary position embeddings

/// cos and sin of position t times frequency θ^(−2i/HS), i < HS/2: (T, HS/2) each, as LlamaRotaryEmbedding
/// computes them (inverse frequencies and angles in binary32).
public final class RotaryTable: @unchecked Sendable {
  public let cos: UnsafeMutablePointer<Float>, sin: UnsafeMutablePointer<Float>
  public let T: Int, half: Int
  public init(T: Int, headSize HS: Int, theta: Double = 10_000) {
    half = HS / 2
    self.T = T
    cos = .allocate(capacity: max(1, T * half))
    sin = .allocate(capacity: max(1, T * half))
    for i in 0..<half {
      let invFreq = Float(1 / Foundation.pow(theta, Double(2 * i) / Double(HS)))
      for t in 0..<T {
        let a = Float(t) * invFreq
        cos[t * half + i] = Foundation.cos(a)
        sin[t * half + i] = Foundation.sin(a)
      }
    }
  }
  deinit {
    cos.deallocate()
    sin.deallocate()
  }
}

/// x (B, T, NH, HS) → out: each head's vector rotated by its position (pairs i and i + HS/2). out may alias x.
/// `stride` is the distance between positions (default NH·HS): the model rotates the query and key heads
/// in place inside its fused q‖k‖v rows.
func ropeForward(_ out: P, _ inp: CP, _ table: RotaryTable, B: Int, T: Int, NH: Int, HS: Int, stride: Int? = nil) {
  rotate(out, inp, table, B: B, T: T, NH: NH, HS: HS, stride: stride ?? NH * HS, inverse: false)
}

/// dout → dinp (the inverse rotation; a rotation's transpose). dinp may alias dout; not accumulated.
func ropeBackward(_ dinp: P, _ dout: CP, _ table: RotaryTable, B: Int, T: Int, NH: Int, HS: Int, stride: Int? = nil) {
  rotate(dinp, dout, table, B: B, T: T, NH: NH, HS: HS, stride: stride ?? NH * HS, inverse: true)
}

/// Rotates each head's pairs (i, i + HS/2) by +angle or, `inverse`, by −angle.
private func rotate(_ out: P, _ inp: CP, _ table: RotaryTable, B: Int, T: Int, NH: Int, HS: Int, stride: Int, inverse: Bool) {
  let h = HS / 2, sign: Float = inverse ? -1 : 1
  Parallel.forRange(B * T, minChunk: 16) { s, e in
    for bt in s..<e {
      let t = bt % T
      let c = table.cos + t * h, sn = table.sin + t * h
      for hd in 0..<NH {
        let x = inp + bt * stride + hd * HS, o = out + bt * stride + hd * HS
        for i in 0..<h {
          let a = x[i], b = x[i + h], si = sign * sn[i]
          o[i] = a * c[i] - b * si
          o[i + h] = b * c[i] + a * si
        }
      }
    }
  }
}

// MARK: - SwiGLU

/// gu (N, 2I), each row gate ‖ up (the fused gate and up projections) → out (N, I) = silu(gate) · up
/// (silu(g) = g · σ(g)). 16 lanes at a time with `VectorMath.exp` (libm's scalar expf was a tenth of a bf16
/// step); a row's tail goes through the same function one value at a time.
package func swigluForward(_ out: P, _ gu: CP, N: Int, I: Int) {
  @inline(__always) func silu(_ g: Vec) -> Vec { g / (1 + VectorMath.exp(-g)) }
  Parallel.forRange(N, minChunk: 4) { s, e in
    for r in s..<e {
      let gate = gu + r * 2 * I, up = gate + I, o = out + r * I
      var i = 0
      while i + 16 <= I {
        VectorMath.store(silu(VectorMath.load(gate + i)) * VectorMath.load(up + i), o + i)
        i += 16
      }
      while i < I {
        o[i] = (silu(Vec(repeating: gate[i])) * up[i])[0]
        i += 1
      }
    }
  }
}

/// dout (N, I) → dgu (N, 2I) (not accumulated): dgate = d · up · σ(g)(1 + g(1 − σ(g))), dup = d · silu(g).
func swigluBackward(_ dgu: P, _ dout: CP, _ gu: CP, N: Int, I: Int) {
  /// (dgate, dup) for 16 lanes.
  @inline(__always) func grads(_ g: Vec, _ u: Vec, _ d: Vec) -> (Vec, Vec) {
    let sg = 1 / (1 + VectorMath.exp(-g))
    return (d * u * sg * (1 + g * (1 - sg)), d * g * sg)
  }
  Parallel.forRange(N, minChunk: 4) { s, e in
    for r in s..<e {
      let gate = gu + r * 2 * I, up = gate + I, dgate = dgu + r * 2 * I, dup = dgate + I, d = dout + r * I
      var i = 0
      while i + 16 <= I {
        let (dg, du) = grads(VectorMath.load(gate + i), VectorMath.load(up + i), VectorMath.load(d + i))
        VectorMath.store(dg, dgate + i)
        VectorMath.store(du, dup + i)
        i += 16
      }
      while i < I {
        let (dg, du) = grads(Vec(repeating: gate[i]), Vec(repeating: up[i]), Vec(repeating: d[i]))
        (dgate[i], dup[i]) = (dg[0], du[0])
        i += 1
      }
    }
  }
}

// MARK: - Embedding

/// tokens (N) → out (N, C) = wte[token].
func embeddingForward(_ out: P, _ tokens: UnsafePointer<Int32>, _ wte: CP, N: Int, C: Int) {
  Parallel.forRange(N, minChunk: 16) { s, e in
    for i in s..<e { (out + i * C).update(from: wte + Int(tokens[i]) * C, count: C) }
  }
}

/// dout (N, C) → dwte[token] += dout; split over channels, so rows of the same token never race.
func embeddingBackward(_ dwte: P, _ dout: CP, _ tokens: UnsafePointer<Int32>, N: Int, C: Int) {
  Parallel.forRange(C, minChunk: 16) { c0, c1 in
    for i in 0..<N {
      let d = dout + i * C, te = dwte + Int(tokens[i]) * C
      for c in c0..<c1 { te[c] += d[c] }
    }
  }
}
