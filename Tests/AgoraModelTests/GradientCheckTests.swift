import Foundation
import AgoraTensor
import Testing
@testable import AgoraModel

/// Finite-difference checks of every layer's backward pass and of the whole `tiny` model.
///
/// Each layer is reduced to the scalar loss Σ out·R for a fixed random R, so ∂loss/∂out = R; the analytic
/// gradient from the backward function is compared with central differences at sampled coordinates.
@Suite struct GradientCheckTests {
  struct Rand {
    var g = SplitMix64(seed: 99)
    mutating func buffer(_ n: Int, scale: Float = 1) -> FloatBuffer {
      let b = FloatBuffer(count: n)
      for i in 0..<n { b[i] = Float(g.nextGaussian()) * scale }
      return b
    }
  }

  /// Compares analytic gradient `ana` of `loss` w.r.t. `x` with central differences on `samples` coordinates.
  func check(_ name: String, x: FloatBuffer, ana: FloatBuffer, samples: Int = 24, eps: Float = 1e-2,
             loss: () -> Double) {
    var g = SplitMix64(seed: 5)
    var worst = 0.0
    for s in 0..<min(samples, x.count) {
      let i = samples >= x.count ? s : Int(g.next() % UInt64(x.count))
      let old = x[i]
      x[i] = old + eps
      let lp = loss()
      x[i] = old - eps
      let lm = loss()
      x[i] = old
      let num = (lp - lm) / Double(2 * eps)
      let a = Double(ana[i])
      let err = abs(num - a) / max(abs(num) + abs(a), 1e-2)
      worst = max(worst, err)
    }
    #expect(worst < 1e-2, "\(name): worst relative error \(worst)")
  }

  func dot(_ a: FloatBuffer, _ r: FloatBuffer) -> Double {
    var s = 0.0
    for i in 0..<a.count { s += Double(a[i]) * Double(r[i]) }
    return s
  }

  @Test func layernorm() {
    var r = Rand()
    let N = 6, C = 20
    let inp = r.buffer(N * C), w = r.buffer(C), b = r.buffer(C), R = r.buffer(N * C)
    let out = FloatBuffer(count: N * C), mean = FloatBuffer(count: N), rstd = FloatBuffer(count: N)
    func loss() -> Double {
      layernormForward(out.pointer, mean.pointer, rstd.pointer, inp.pointer, w.pointer, b.pointer, N: N, C: C)
      return dot(out, R)
    }
    _ = loss()
    let dinp = FloatBuffer(count: N * C), dw = FloatBuffer(count: C), db = FloatBuffer(count: C)
    let scratch = FloatBuffer(count: Parallel.threads * 2 * C)
    layernormBackward(dinp.pointer, dw.pointer, db.pointer, R.pointer, inp.pointer, w.pointer, mean.pointer, rstd.pointer,
                      N: N, C: C, scratch: scratch.pointer)
    check("layernorm dinp", x: inp, ana: dinp, loss: loss)
    check("layernorm dw", x: w, ana: dw, samples: C, loss: loss)
    check("layernorm db", x: b, ana: db, samples: C, loss: loss)
  }

  @Test func matmul() {
    var r = Rand()
    let N = 9, C = 13, OC = 7
    let inp = r.buffer(N * C), w = r.buffer(C * OC), b = r.buffer(OC), R = r.buffer(N * OC)
    let out = FloatBuffer(count: N * OC)
    func loss() -> Double {
      matmulForward(out.pointer, inp.pointer, w.pointer, b.pointer, N: N, C: C, OC: OC)
      return dot(out, R)
    }
    _ = loss()
    let dinp = FloatBuffer(count: N * C), dw = FloatBuffer(count: C * OC), db = FloatBuffer(count: OC)
    matmulBackward(dinp.pointer, dw.pointer, db.pointer, R.pointer, inp.pointer, w.pointer, N: N, C: C, OC: OC)
    check("matmul dinp", x: inp, ana: dinp, loss: loss)
    check("matmul dw", x: w, ana: dw, loss: loss)
    check("matmul db", x: b, ana: db, samples: OC, loss: loss)
  }

  @Test func gelu() {
    var r = Rand()
    let n = 37  // not a multiple of 16: exercises the scalar tail
    let inp = r.buffer(n, scale: 2), R = r.buffer(n), out = FloatBuffer(count: n)
    func loss() -> Double { geluForward(out.pointer, inp.pointer, n: n); return dot(out, R) }
    _ = loss()
    let dinp = FloatBuffer(count: n)
    geluBackward(dinp.pointer, inp.pointer, R.pointer, n: n)
    check("gelu", x: inp, ana: dinp, samples: n, eps: 1e-3, loss: loss)
  }

  /// T = 70 spans two query blocks of the blocked causal attention, with a ragged last block.
  @Test(arguments: [5, 70])
  func attention(T: Int) {
    var r = Rand()
    let B = 2, C = 8, NH = 2
    let qkv = r.buffer(B * T * 3 * C), R = r.buffer(B * T * C)
    let out = FloatBuffer(count: B * T * C), att = FloatBuffer(count: B * NH * T * T)
    func loss() -> Double { attentionForward(out.pointer, att.pointer, qkv.pointer, B: B, T: T, C: C, NH: NH); return dot(out, R) }
    _ = loss()
    let dqkv = FloatBuffer(count: B * T * 3 * C), scratch = FloatBuffer(count: Parallel.threads * T * T)
    attentionBackward(dqkv.pointer, R.pointer, qkv.pointer, att.pointer, B: B, T: T, C: C, NH: NH, scratch: scratch.pointer)
    check("attention dqkv", x: qkv, ana: dqkv, samples: 60, eps: 1e-2, loss: loss)
    // Causality: the output at t=0 must not depend on later positions.
    let before = (0..<C).map { out[$0] }
    qkv[(T - 1) * 3 * C] += 5
    _ = loss()
    #expect((0..<C).map { out[$0] } == before)
  }

  @Test func crossEntropy() {
    var r = Rand()
    let N = 4, V = 23
    let logits = r.buffer(N * V), work = FloatBuffer(count: N * V), losses = FloatBuffer(count: N)
    let targets: [Int32] = [0, 22, 5, 5]
    func loss() -> Double {
      work.copy(from: logits)
      crossEntropyForward(work.pointer, losses.pointer, targets, N: N, V: V, dlossScale: nil)
      return (0..<N).reduce(0.0) { $0 + Double(losses[$1]) }
    }
    _ = loss()
    work.copy(from: logits)
    crossEntropyForward(work.pointer, losses.pointer, targets, N: N, V: V, dlossScale: 1)
    let dlogits = FloatBuffer(count: N * V)
    dlogits.copy(from: work)
    check("cross-entropy dlogits", x: logits, ana: dlogits, samples: N * V, eps: 1e-2, loss: loss)
  }

  @Test func encoder() {
    var r = Rand()
    let B = 2, T = 3, C = 4, V = 5
    let wte = r.buffer(V * C), wpe = r.buffer(T * C), R = r.buffer(B * T * C), out = FloatBuffer(count: B * T * C)
    let tokens: [Int32] = [1, 1, 4, 0, 1, 2]  // repeated tokens accumulate
    func loss() -> Double { encoderForward(out.pointer, tokens, wte.pointer, wpe.pointer, BT: B * T, T: T, C: C); return dot(out, R) }
    _ = loss()
    let dwte = FloatBuffer(count: V * C), dwpe = FloatBuffer(count: T * C)
    encoderBackward(dwte.pointer, dwpe.pointer, R.pointer, tokens, BT: B * T, T: T, C: C)
    check("encoder dwte", x: wte, ana: dwte, samples: V * C, loss: loss)
    check("encoder dwpe", x: wpe, ana: dwpe, samples: T * C, loss: loss)
  }

  @Test(arguments: ["tiny", "llama-tiny"])
  func wholeTinyModel(preset: String) throws {
    var c = try GPTConfig.preset(preset)
    c.vocabSize = 61
    c.contextLength = 8
    let B = 2, T = 8
    let model = try GPT(config: c, batch: B, sequence: T, seed: 3)
    // Move away from initialisation (unit norms, zero biases) so every parameter matters.
    var r = SplitMix64(seed: 11)
    for i in 0..<model.parameters.count { model.parameters[i] += Float(r.nextGaussian() * 0.05) }
    let x = (0..<(B * T)).map { _ in Int32(r.next() % 61) }, y = (0..<(B * T)).map { _ in Int32(r.next() % 61) }
    model.zeroGradients()
    _ = try model.forward(tokens: x, targets: y, backwardScale: 1 / Float(B * T))
    try model.backward()
    let grads = FloatBuffer(count: model.gradients.count)
    grads.copy(from: model.gradients)
    // Check a few coordinates of every tensor, where the gradient is largest (finite differences in fp32
    // are only meaningful there).
    var worst = 0.0, checked = 0
    for t in model.layout.tensors {
      let idx = (t.offset..<(t.offset + t.count)).sorted { abs(grads[$0]) > abs(grads[$1]) }.prefix(3)
      for i in idx where abs(grads[i]) > 1e-4 {
        let old = model.parameters[i]
        let eps: Float = 1e-2
        model.parameters[i] = old + eps
        let lp = Double(try model.forward(tokens: x, targets: y)!)
        model.parameters[i] = old - eps
        let lm = Double(try model.forward(tokens: x, targets: y)!)
        model.parameters[i] = old
        let num = (lp - lm) / Double(2 * eps)
        let err = abs(num - Double(grads[i])) / max(abs(num) + abs(Double(grads[i])), 1e-3)
        worst = max(worst, err)
        checked += 1
      }
    }
    #expect(checked > 50)
    #expect(worst < 3e-2, "whole \(preset) model: worst relative error \(worst) over \(checked) coordinates")
  }
}

/// Finite-difference checks of the LLaMA-style block's new layers (issue #18): RMSNorm, rotary embeddings, SwiGLU.
@Suite struct LlamaLayerGradientTests {
  let gc = GradientCheckTests()

  @Test func rmsnorm() {
    var r = GradientCheckTests.Rand()
    let N = 6, C = 20
    let inp = r.buffer(N * C), w = r.buffer(C), R = r.buffer(N * C)
    let out = FloatBuffer(count: N * C), rstd = FloatBuffer(count: N)
    func loss() -> Double {
      rmsnormForward(out.pointer, rstd.pointer, inp.pointer, w.pointer, N: N, C: C, eps: 1e-5)
      return gc.dot(out, R)
    }
    _ = loss()
    // Forward: each row's mean square after normalisation (w = 1) is 1.
    let ones = FloatBuffer(count: C)
    for c in 0..<C { ones[c] = 1 }
    rmsnormForward(out.pointer, rstd.pointer, inp.pointer, ones.pointer, N: N, C: C, eps: 0)
    var ms = 0.0
    for c in 0..<C { ms += Double(out[c] * out[c]) }
    #expect(abs(ms / Double(C) - 1) < 1e-5)
    _ = loss()
    let dinp = FloatBuffer(count: N * C), dw = FloatBuffer(count: C)
    let scratch = FloatBuffer(count: Parallel.threads * C)
    rmsnormBackward(dinp.pointer, dw.pointer, R.pointer, inp.pointer, w.pointer, rstd.pointer, N: N, C: C, scratch: scratch.pointer)
    gc.check("rmsnorm dinp", x: inp, ana: dinp, loss: loss)
    gc.check("rmsnorm dw", x: w, ana: dw, samples: C, loss: loss)
  }

  @Test func rotaryEmbeddings() {
    var r = GradientCheckTests.Rand()
    let B = 2, T = 7, NH = 3, HS = 8
    let n = B * T * NH * HS
    let inp = r.buffer(n), R = r.buffer(n), out = FloatBuffer(count: n)
    let table = RotaryTable(T: T, headSize: HS)
    func loss() -> Double {
      ropeForward(out.pointer, inp.pointer, table, B: B, T: T, NH: NH, HS: HS)
      return gc.dot(out, R)
    }
    _ = loss()
    // Position 0 is not rotated; every position keeps each head's norm.
    for i in 0..<(NH * HS) { #expect(out[i] == inp[i]) }
    for v in 0..<(B * T * NH) {
      var a = 0.0, b = 0.0
      for i in 0..<HS { a += Double(inp[v * HS + i] * inp[v * HS + i]); b += Double(out[v * HS + i] * out[v * HS + i]) }
      #expect(abs(a - b) < 1e-4 * max(1, a))
    }
    // Position 3, head 1, pair 2: the angle is 3 · 10000^(−4/8).
    let a = Float(3) * Float(1 / pow(10_000.0, 4.0 / 8.0)), base = ((0 * T + 3) * NH + 1) * HS
    #expect(abs(out[base + 2] - (inp[base + 2] * cos(a) - inp[base + 6] * sin(a))) < 1e-5)
    let dinp = FloatBuffer(count: n)
    ropeBackward(dinp.pointer, R.pointer, table, B: B, T: T, NH: NH, HS: HS)
    gc.check("rope dinp", x: inp, ana: dinp, samples: 40, loss: loss)
    // With a stride (the model's fused q‖k‖v rows), in place: the first NH heads of each row rotate as above,
    // the rest of the row (the values) stays.
    let W = (NH + 2) * HS
    let rows = r.buffer(B * T * W), copy = FloatBuffer(count: B * T * W), ref = FloatBuffer(count: B * T * W)
    copy.copy(from: rows)
    ropeForward(rows.pointer, rows.pointer, table, B: B, T: T, NH: NH, HS: HS, stride: W)
    ropeForward(ref.pointer, copy.pointer, table, B: B, T: T, NH: NH, HS: HS, stride: W)
    var same = true
    for bt in 0..<(B * T) {
      for i in 0..<W { same = same && rows[bt * W + i] == (i < NH * HS ? ref[bt * W + i] : copy[bt * W + i]) }
    }
    #expect(same)
    #expect(rows[W + 1] != copy[W + 1])  // position 1 rotates
  }

  /// SwiGLU on fused gate ‖ up rows (N, 2I) → (N, I).
  /// I = 13: only the one-value tail; I = 37: two 16-lane vectors and a tail in each row.
  @Test(arguments: [13, 37]) func swiglu(I: Int) {
    var r = GradientCheckTests.Rand()
    let N = 3
    let gu = r.buffer(N * 2 * I, scale: 2), R = r.buffer(N * I), out = FloatBuffer(count: N * I)
    func loss() -> Double { swigluForward(out.pointer, gu.pointer, N: N, I: I); return gc.dot(out, R) }
    _ = loss()
    // Row 1, column 4: silu(gate) · up, with gate and up from the row's two halves.
    let g = gu[2 * I + 4], u = gu[2 * I + I + 4]
    #expect(abs(out[I + 4] - g / (1 + exp(-g)) * u) < 1e-6)
    let dgu = FloatBuffer(count: N * 2 * I)
    swigluBackward(dgu.pointer, R.pointer, gu.pointer, N: N, I: I)
    gc.check("swiglu dgate, dup", x: gu, ana: dgu, samples: N * 2 * I, eps: 1e-3, loss: loss)
  }

  /// Grouped-query attention: with as many key/value heads as query heads it is `attentionForward` exactly (the
  /// same packing); with 4 query heads on 2 or 1 key/value heads its backward matches finite differences,
  /// dK and dV summing over each group's query heads. T = 70 spans two query blocks.
  @Test(arguments: [(4, 4, 5), (4, 2, 70), (4, 1, 9)])
  func groupedQueryAttention(NH: Int, NKV: Int, T: Int) {
    var r = GradientCheckTests.Rand()
    let B = 2, HS = 4, W = (NH + 2 * NKV) * HS, C = NH * HS
    let qkv = r.buffer(B * T * W), R = r.buffer(B * T * C)
    let out = FloatBuffer(count: B * T * C), att = FloatBuffer(count: B * NH * T * T)
    func loss() -> Double {
      gqaAttentionForward(out.pointer, att.pointer, qkv.pointer, B: B, T: T, NH: NH, NKV: NKV, HS: HS)
      return gc.dot(out, R)
    }
    _ = loss()
    if NKV == NH {
      let ref = FloatBuffer(count: B * T * C), att2 = FloatBuffer(count: B * NH * T * T)
      attentionForward(ref.pointer, att2.pointer, qkv.pointer, B: B, T: T, C: C, NH: NH)
      #expect((0..<ref.count).allSatisfy { ref[$0] == out[$0] })
    }
    let dqkv = FloatBuffer(count: B * T * W), scratch = FloatBuffer(count: Parallel.threads * T * T)
    gqaAttentionBackward(dqkv.pointer, R.pointer, qkv.pointer, att.pointer, B: B, T: T, NH: NH, NKV: NKV, HS: HS, scratch: scratch.pointer)
    gc.check("gqa dqkv (\(NH)/\(NKV))", x: qkv, ana: dqkv, samples: 80, eps: 1e-2, loss: loss)
  }
}
