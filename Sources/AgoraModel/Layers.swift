import AgoraTensor
#if canImport(Glibc)
import Glibc
#else
import Foundation
#endif

// The layers of GPT-2 as forward/backward pairs of free functions (after llm.c's train_gpt2.c).
// Shapes are row-major; gradient arguments start with `d`. Backward functions *accumulate* into
// parameter gradients (so micro-batches add up) and into `dinp` where the comment says so.
// Every loop is split over rows by `Parallel`; parameter-gradient reductions use per-chunk partial
// sums added in a fixed order, so a run is bit-identical for the same thread count.

package typealias P = UnsafeMutablePointer<Float>
package typealias CP = UnsafePointer<Float>

// MARK: - Embeddings

/// tokens (B·T) → out (B·T, C) = wte[token] + wpe[t].
func encoderForward(_ out: P, _ tokens: UnsafePointer<Int32>, _ wte: CP, _ wpe: CP, BT: Int, T: Int, C: Int) {
  Parallel.forRange(BT, minChunk: 16) { s, e in
    for i in s..<e {
      let o = out + i * C, te = wte + Int(tokens[i]) * C, pe = wpe + (i % T) * C
      for c in 0..<C { o[c] = te[c] + pe[c] }
    }
  }
}

/// dout (B·T, C) → dwte[token] += dout, dwpe[t] += dout. Split over channels, so rows with the same
/// token never race and the order of additions is fixed.
func encoderBackward(_ dwte: P, _ dwpe: P, _ dout: CP, _ tokens: UnsafePointer<Int32>, BT: Int, T: Int, C: Int) {
  Parallel.forRange(C, minChunk: 16) { c0, c1 in
    for i in 0..<BT {
      let d = dout + i * C, te = dwte + Int(tokens[i]) * C, pe = dwpe + (i % T) * C
      for c in c0..<c1 {
        te[c] += d[c]
        pe[c] += d[c]
      }
    }
  }
}

// MARK: - LayerNorm

/// inp (N, C) → out (N, C), with mean and rstd (N) kept for the backward pass. eps = 1e-5.
package func layernormForward(_ out: P, _ mean: P, _ rstd: P, _ inp: CP, _ w: CP, _ b: CP, N: Int, C: Int) {
  Parallel.forRange(N, minChunk: 8) { s, e in
    for i in s..<e {
      let x = inp + i * C, o = out + i * C
      let m = VectorMath.sum(x, C) / Float(C)
      var v: Float = 0
      for c in 0..<C { let d = x[c] - m; v += d * d }
      let r = 1 / (v / Float(C) + 1e-5).squareRoot()
      for c in 0..<C { o[c] = (x[c] - m) * r * w[c] + b[c] }
      mean[i] = m
      rstd[i] = r
    }
  }
}

/// dout (N, C) → dinp (N, C) **accumulated**, dw and db (C) accumulated.
func layernormBackward(_ dinp: P, _ dw: P, _ db: P, _ dout: CP, _ inp: CP, _ w: CP, _ mean: CP, _ rstd: CP,
                       N: Int, C: Int, scratch: P) {
  let chunks = Parallel.threads
  // scratch holds chunks × 2C partial sums of dw, db.
  scratch.update(repeating: 0, count: chunks * 2 * C)
  Parallel.forChunks(N, chunks: chunks) { k, s, e in
    let pdw = scratch + k * 2 * C, pdb = pdw + C
    for i in s..<e {
      let x = inp + i * C, d = dout + i * C, di = dinp + i * C
      let m = mean[i], r = rstd[i]
      var dnormMean: Float = 0, dnormNormMean: Float = 0
      for c in 0..<C {
        let n = (x[c] - m) * r
        let dn = w[c] * d[c]
        dnormMean += dn
        dnormNormMean += dn * n
        pdb[c] += d[c]
        pdw[c] += n * d[c]
      }
      dnormMean /= Float(C)
      dnormNormMean /= Float(C)
      for c in 0..<C {
        let n = (x[c] - m) * r
        let dn = w[c] * d[c]
        di[c] += (dn - dnormMean - n * dnormNormMean) * r
      }
    }
  }
  for k in 0..<min(chunks, N) {
    let pdw = scratch + k * 2 * C, pdb = pdw + C
    for c in 0..<C { dw[c] += pdw[c]; db[c] += pdb[c] }
  }
}

// MARK: - Linear

/// How a layer's weight matrix is stored in the parameter buffer.
enum WeightLayout {
  /// (in, out), Hugging Face GPT-2's Conv1D.
  case inOut
  /// (out, in), `nn.Linear` (LLaMA, and every output head).
  case outIn
}

/// out (N, OC) = b in every row.
func fillRows(_ out: P, _ b: CP, N: Int, OC: Int) {
  Parallel.forRange(N, minChunk: 16) { s, e in
    for i in s..<e { (out + i * OC).update(from: b, count: OC) }
  }
}

/// inp (N, C) · W + b (OC) → out (N, OC), W stored (C, OC) or, `.outIn`, (OC, C).
func matmulForward(_ out: P, _ inp: CP, _ w: CP, _ b: CP?, N: Int, C: Int, OC: Int, layout: WeightLayout = .inOut) {
  if let b { fillRows(out, b, N: N, OC: OC) }
  let outIn = layout == .outIn
  BLAS.sgemm(transA: false, transB: outIn, m: N, n: OC, k: C, a: inp, lda: C, b: w, ldb: outIn ? C : OC,
             beta: b == nil ? 0 : 1, c: out, ldc: OC)
}

/// dout (N, OC) → dinp (N, C) (overwritten, or accumulated with `accumulate`), dw (W's layout) and db (OC) accumulated.
func matmulBackward(_ dinp: P, _ dw: P, _ db: P?, _ dout: CP, _ inp: CP, _ w: CP, N: Int, C: Int, OC: Int,
                    layout: WeightLayout = .inOut, accumulate: Bool = false) {
  switch layout {
  case .inOut:
    // dinp = dout · Wᵀ (W is C × OC); dW (C × OC) += inpᵀ · dout
    BLAS.sgemm(transA: false, transB: true, m: N, n: C, k: OC, a: dout, lda: OC, b: w, ldb: OC,
               beta: accumulate ? 1 : 0, c: dinp, ldc: C)
    BLAS.sgemm(transA: true, transB: false, m: C, n: OC, k: N, a: inp, lda: C, b: dout, ldb: OC,
               beta: 1, c: dw, ldc: OC)
  case .outIn:
    // dinp = dout · W (W is OC × C); dW (OC × C) += doutᵀ · inp
    BLAS.sgemm(transA: false, transB: false, m: N, n: C, k: OC, a: dout, lda: OC, b: w, ldb: C,
               beta: accumulate ? 1 : 0, c: dinp, ldc: C)
    BLAS.sgemm(transA: true, transB: false, m: OC, n: C, k: N, a: dout, lda: OC, b: inp, ldb: C,
               beta: 1, c: dw, ldc: C)
  }
  if let db { biasBackward(db, dout, N: N, OC: OC) }
}

/// dout (N, OC) → db (OC) += Σ rows.
func biasBackward(_ db: P, _ dout: CP, N: Int, OC: Int) {
  Parallel.forRange(OC, minChunk: 64) { j0, j1 in
    for i in 0..<N {
      let d = dout + i * OC
      for j in j0..<j1 { db[j] += d[j] }
    }
  }
}

// MARK: - GELU (tanh approximation, HF "gelu_new")

private let geluK: Float = 0.7978845608028654  // sqrt(2/pi)

/// out = 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))), n elements.
package func geluForward(_ out: P, _ inp: CP, n: Int) {
  Parallel.forRange(n / 16, minChunk: 256) { s, e in
    for v in s..<e {
      let x = VectorMath.load(inp + v * 16)
      let t = VectorMath.tanh(geluK * (x + 0.044715 * x * x * x))
      VectorMath.store(0.5 * x * (1 + t), out + v * 16)
    }
  }
  for i in (n / 16 * 16)..<n {
    let x = Vec(repeating: inp[i])
    out[i] = (0.5 * x * (1 + VectorMath.tanh(geluK * (x + 0.044715 * x * x * x))))[0]
  }
}

/// dinp = dout · gelu'(inp), n elements (dinp may alias dout).
func geluBackward(_ dinp: P, _ inp: CP, _ dout: CP, n: Int) {
  @inline(__always) func grad(_ x: Vec) -> Vec {
    let x3 = x * x * x
    let t = VectorMath.tanh(geluK * (x + 0.044715 * x3))
    let sech2 = 1 - t * t
    return 0.5 * (1 + t) + 0.5 * x * sech2 * geluK * (1 + 3 * 0.044715 * x * x)
  }
  Parallel.forRange(n / 16, minChunk: 256) { s, e in
    for v in s..<e {
      let g = grad(VectorMath.load(inp + v * 16))
      VectorMath.store(g * VectorMath.load(dout + v * 16), dinp + v * 16)
    }
  }
  for i in (n / 16 * 16)..<n { dinp[i] = grad(Vec(repeating: inp[i]))[0] * dout[i] }
}

// MARK: - Residual

/// out = a + b, n elements.
package func residualForward(_ out: P, _ a: CP, _ b: CP, n: Int) {
  Parallel.forRange(n, minChunk: 4096) { s, e in
    for i in s..<e { out[i] = a[i] + b[i] }
  }
}

// MARK: - Causal self-attention

/// Query rows are processed in blocks of this many: block i only needs the keys of blocks 0...i, so the
/// score and value GEMMs skip most of the masked upper triangle.
let attentionBlock = 64

/// qkv (B, T, 3C) → out (B, T, C); att (B, NH, T, T) keeps the softmax probabilities for backward
/// (for a query block [r0, r1) only columns < r1 are written; backward reads no others).
/// Multi-head attention is grouped-query attention with one query head per key/value head (below).
func attentionForward(_ out: P, _ att: P, _ qkv: CP, B: Int, T: Int, C: Int, NH: Int) {
  gqaAttentionForward(out, att, qkv, B: B, T: T, NH: NH, NKV: NH, HS: C / NH)
}

/// In place softmax over the first `valid` entries of a row; entries valid..<T are set to 0.
@inline(__always)
func softmaxCausalRow(_ row: P, valid: Int, T: Int) {
  var vmx = Vec(repeating: -Float.infinity)
  var j = 0
  while j + 16 <= valid { let x = VectorMath.load(row + j); vmx.replace(with: x, where: x .> vmx); j += 16 }
  var mx = vmx.max()
  while j < valid { mx = max(mx, row[j]); j += 1 }
  j = 0
  let vm = Vec(repeating: mx)
  var acc = Vec()
  while j + 16 <= valid {
    let e = VectorMath.exp(VectorMath.load(row + j) - vm)
    VectorMath.store(e, row + j)
    acc += e
    j += 16
  }
  var sum = acc.sum()
  while j < valid {
    let e = VectorMath.exp(row[j] - mx)
    row[j] = e
    sum += e
    j += 1
  }
  let inv = 1 / sum
  for j in 0..<valid { row[j] *= inv }
  if valid < T { (row + valid).update(repeating: 0, count: T - valid) }
}

/// dout (B, T, C) → dqkv (B, T, 3C) (overwritten). `scratch` needs Parallel.threads × T·T floats.
func attentionBackward(_ dqkv: P, _ dout: CP, _ qkv: CP, _ att: CP, B: Int, T: Int, C: Int, NH: Int, scratch: P) {
  gqaAttentionBackward(dqkv, dout, qkv, att, B: B, T: T, NH: NH, NKV: NH, HS: C / NH, scratch: scratch)
}

// MARK: - Grouped-query attention

/// Causal attention with NKV key/value heads shared by groups of NH / NKV query heads (GQA; NKV = NH is plain
/// multi-head attention). qkv (B, T, W) with W = (NH + 2·NKV)·HS holds each position's queries, then keys, then
/// values (head-major); query head h reads key/value head h / (NH / NKV). out (B, T, NH·HS); att (B, NH, T, T)
/// keeps the softmax probabilities (for a query block [r0, r1) only columns < r1 are written; backward reads no
/// others). Blocked over queries; heads run in parallel, one thread each, each with single-threaded GEMMs.
func gqaAttentionForward(_ out: P, _ att: P, _ qkv: CP, B: Int, T: Int, NH: Int, NKV: Int, HS: Int) {
  let W = (NH + 2 * NKV) * HS, C = NH * HS, group = NH / NKV
  let scale = 1 / Float(HS).squareRoot()
  Parallel.forEach(B * NH) { bh in
    let b = bh / NH, h = bh % NH, kvh = h / group
    let q = qkv + b * T * W + h * HS, k = qkv + b * T * W + C + kvh * HS, v = k + NKV * HS
    let a = att + bh * T * T
    var r0 = 0
    while r0 < T {
      let r1 = min(T, r0 + attentionBlock)
      BLAS.sgemm1(transA: false, transB: true, m: r1 - r0, n: r1, k: HS, alpha: scale, a: q + r0 * W, lda: W,
                  b: k, ldb: W, beta: 0, c: a + r0 * T, ldc: T)
      for t in r0..<r1 { softmaxCausalRow(a + t * T, valid: t + 1, T: r1) }
      BLAS.sgemm1(transA: false, transB: false, m: r1 - r0, n: HS, k: r1, a: a + r0 * T, lda: T, b: v, ldb: W,
                  beta: 0, c: out + (b * T + r0) * C + h * HS, ldc: C)
      r0 = r1
    }
  }
}

/// dout (B, T, NH·HS) → dqkv (B, T, W) (overwritten). Work is split by (batch, key/value head): the query heads
/// of a group add into their shared dK and dV one after another. `scratch` needs Parallel.threads × T·T floats.
func gqaAttentionBackward(_ dqkv: P, _ dout: CP, _ qkv: CP, _ att: CP, B: Int, T: Int, NH: Int, NKV: Int, HS: Int, scratch: P) {
  let W = (NH + 2 * NKV) * HS, C = NH * HS, group = NH / NKV
  let scale = 1 / Float(HS).squareRoot()
  Parallel.forChunks(B * NKV) { chunk, s, e in
    let ds = scratch + chunk * T * T
    for bkv in s..<e {
      let b = bkv / NKV, kvh = bkv % NKV
      let k = qkv + b * T * W + C + kvh * HS, v = k + NKV * HS
      let dk = dqkv + b * T * W + C + kvh * HS, dv = dk + NKV * HS
      for t in 0..<T {
        (dk + t * W).update(repeating: 0, count: HS)
        (dv + t * W).update(repeating: 0, count: HS)
      }
      for h in (kvh * group)..<((kvh + 1) * group) {
        let q = qkv + b * T * W + h * HS, dq = dqkv + b * T * W + h * HS
        let dy = dout + b * T * C + h * HS
        let a = att + (b * NH + h) * T * T
        var r0 = 0
        while r0 < T {
          let r1 = min(T, r0 + attentionBlock), m = r1 - r0
          let pa = a + r0 * T, dsb = ds + r0 * T
          BLAS.sgemm1(transA: false, transB: true, m: m, n: r1, k: HS, a: dy + r0 * C, lda: C, b: v, ldb: W, beta: 0, c: dsb, ldc: T)
          BLAS.sgemm1(transA: true, transB: false, m: r1, n: HS, k: m, a: pa, lda: T, b: dy + r0 * C, ldb: C, beta: 1, c: dv, ldc: W)
          for t in r0..<r1 {
            let pr = a + t * T, dr = ds + t * T
            var dot: Float = 0
            for j in 0...t { dot += pr[j] * dr[j] }
            for j in 0...t { dr[j] = pr[j] * (dr[j] - dot) }
            if t + 1 < r1 { (dr + t + 1).update(repeating: 0, count: r1 - t - 1) }
          }
          BLAS.sgemm1(transA: false, transB: false, m: m, n: HS, k: r1, alpha: scale, a: dsb, lda: T, b: k, ldb: W, beta: 0, c: dq + r0 * W, ldc: W)
          BLAS.sgemm1(transA: true, transB: false, m: r1, n: HS, k: m, alpha: scale, a: dsb, lda: T, b: q + r0 * W, ldb: W, beta: 1, c: dk, ldc: W)
          r0 = r1
        }
      }
    }
  }
}

// MARK: - Output head and cross-entropy

/// logits (N, V), in place: softmax, per-row loss (nats) against `targets`, and — when `dlossScale` is given —
/// dlogits = (p − onehot) · dlossScale written over the logits. A row whose target is `GPT.ignoredTarget` has
/// loss 0 and, with `dlossScale`, zero dlogits (Hugging Face's −100: a prompt token in answer-only training).
func crossEntropyForward(_ logits: P, _ losses: P, _ targets: UnsafePointer<Int32>, N: Int, V: Int,
                         dlossScale: Float?) {
  Parallel.forRange(N, minChunk: 4) { s, e in
    for i in s..<e {
      let row = logits + i * V
      if targets[i] == GPT.ignoredTarget {
        losses[i] = 0
        if dlossScale != nil { row.update(repeating: 0, count: V) }
        continue
      }
      var mx = -Float.infinity
      var vmx = Vec(repeating: -Float.infinity)
      var j = 0
      while j + 16 <= V { let x = VectorMath.load(row + j); vmx.replace(with: x, where: x .> vmx); j += 16 }
      mx = vmx.max()
      while j < V { mx = max(mx, row[j]); j += 1 }
      let target = Int(targets[i])
      let targetLogit = row[target]
      var acc = Vec()
      let vm = Vec(repeating: mx)
      j = 0
      if let scale = dlossScale {
        while j + 16 <= V {
          let ex = VectorMath.exp(VectorMath.load(row + j) - vm)
          VectorMath.store(ex, row + j)
          acc += ex
          j += 16
        }
        var sum = acc.sum()
        while j < V { let ex = VectorMath.exp(row[j] - mx); row[j] = ex; sum += ex; j += 1 }
        losses[i] = (sum.logValue) + mx - targetLogit
        let k = scale / sum
        j = 0
        let vk = Vec(repeating: k)
        while j + 16 <= V { VectorMath.store(VectorMath.load(row + j) * vk, row + j); j += 16 }
        while j < V { row[j] *= k; j += 1 }
        row[target] -= scale
      } else {
        while j + 16 <= V { acc += VectorMath.exp(VectorMath.load(row + j) - vm); j += 16 }
        var sum = acc.sum()
        while j < V { sum += VectorMath.exp(row[j] - mx); j += 1 }
        losses[i] = sum.logValue + mx - targetLogit
      }
    }
  }
}

extension Float {
  /// Natural logarithm via the C library (one call per row, not per element).
  @inline(__always) var logValue: Float { Float(_log(Double(self))) }
}

@inline(__always) private func _log(_ x: Double) -> Double {
  #if canImport(Glibc)
  return Glibc.log(x)
  #else
  return Foundation.log(x)
  #endif
}
