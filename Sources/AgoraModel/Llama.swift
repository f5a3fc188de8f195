import AgoraTensor

// The LLaMA-style body of `GPT` (issue #18), as Hugging Face's LlamaForCausalLM computes it: per block
//   x₁ = x + o(attention(rope(q(n₁)), rope(k(n₁)), v(n₁))),  n₁ = rmsnorm(x)
//   x₂ = x₁ + down(silu(gate(n₂)) · up(n₂)),                 n₂ = rmsnorm(x₁)
// then a final RMSNorm and an untied output head (GPT.swift). No biases. The q, k, v projections run as one
// GEMM over their back-to-back weights (ParameterLayout), and so do gate and up.

extension GPT {
  /// The blocks and final RMSNorm on `head.tokens`; returns the normalised hidden states (BT, C).
  func llamaForward(_ a: LlamaActivations, _ rope: RotaryTable) throws -> CP {
    let c = config
    let (B, T, C, L, NH, NKV, HS, I) = (self.B, self.T, c.channels, c.layers, c.heads, c.kvHeads, c.headSize, c.intermediate)
    let BT = B * T, W = (NH + 2 * NKV) * HS, eps = c.normEps
    let p = UnsafePointer(parameters.pointer)
    embeddingForward(a.encoded, head.tokens, p + layout.wte, N: BT, C: C)
    for l in 0..<L {
      let w = layout.llamaBlocks[l], s = a.layer(l)
      let x = l == 0 ? a.encoded : a.layer(l - 1).res3
      rmsnormForward(s.n1, s.r1, x, p + w.attnNorm, N: BT, C: C, eps: eps)
      try products.forward(s.qkv, s.n1, w: w.qkv, layout: .outIn, N: BT, C: C, OC: W)
      if let ad = adapters {
        for site in [LoRALayout.Site.q, .k, .v] { ad.forward(site, layer: l, out: s.qkv, ldo: W, x: s.n1) }
      }
      // Queries and keys are adjacent in each row: one pass rotates NH + NKV heads.
      ropeForward(s.qkv, s.qkv, rope, B: B, T: T, NH: NH + NKV, HS: HS, stride: W)
      gqaAttentionForward(s.atty, s.att, s.qkv, B: B, T: T, NH: NH, NKV: NKV, HS: HS)
      try products.forward(a.proj, s.atty, w: w.o, layout: .outIn, N: BT, C: NH * HS, OC: C)
      adapters?.forward(.o, layer: l, out: a.proj, ldo: C, x: s.atty)
      residualForward(s.res2, x, a.proj, n: BT * C)
      rmsnormForward(s.n2, s.r2, s.res2, p + w.mlpNorm, N: BT, C: C, eps: eps)
      try products.forward(s.gu, s.n2, w: w.gateUp, layout: .outIn, N: BT, C: C, OC: 2 * I)
      if let ad = adapters {
        for site in [LoRALayout.Site.gate, .up] { ad.forward(site, layer: l, out: s.gu, ldo: 2 * I, x: s.n2) }
      }
      swigluForward(s.h, s.gu, N: BT, I: I)
      try products.forward(a.proj, s.h, w: w.down, layout: .outIn, N: BT, C: I, OC: C)
      adapters?.forward(.down, layer: l, out: a.proj, ldo: C, x: s.h)
      residualForward(s.res3, s.res2, a.proj, n: BT * C)
    }
    rmsnormForward(a.nf, a.rf, a.layer(L - 1).res3, p + layout.lnfw, N: BT, C: C, eps: eps)
    return UnsafePointer(a.nf)
  }

  func llamaBackward(_ a: LlamaActivations, _ d: LlamaGradients, _ rope: RotaryTable) throws {
    let c = config
    let (B, T, C, L, NH, NKV, HS, I) = (self.B, self.T, c.channels, c.layers, c.heads, c.kvHeads, c.headSize, c.intermediate)
    let BT = B * T, W = (NH + 2 * NKV) * HS
    let p = UnsafePointer(parameters.pointer)
    let wg = trainsBase
    try headBackward(hidden: a.nf, dhidden: d.dn)
    d.dresidual.update(repeating: 0, count: BT * C)
    rmsnormBackward(d.dresidual, gradient(layout.lnfw), d.dn, a.layer(L - 1).res3, p + layout.lnfw, a.rf, N: BT, C: C, scratch: d.scratch)
    for l in stride(from: L - 1, through: 0, by: -1) {
      let w = layout.llamaBlocks[l], s = a.layer(l)
      let x = l == 0 ? a.encoded : a.layer(l - 1).res3
      // dresidual is ∂/∂res3; the MLP branch:
      try products.backward(d.dh, d.dresidual, s.h, w: w.down, layout: .outIn, N: BT, C: I, OC: C, weightGradients: wg)
      // A frozen base keeps one layer's normalised inputs and SwiGLU output: the adapters' backward recomputes them.
      if recomputesAttention { swigluForward(s.h, s.gu, N: BT, I: I) }
      adapters?.backward(.down, layer: l, dout: d.dresidual, ldo: C, x: s.h, dinp: d.dh)
      swigluBackward(d.dgu, d.dh, s.gu, N: BT, I: I)
      try products.backward(d.dn, d.dgu, s.n2, w: w.gateUp, layout: .outIn, N: BT, C: C, OC: 2 * I, weightGradients: wg)
      if recomputesAttention { rmsnormForward(s.n2, s.r2, s.res2, p + w.mlpNorm, N: BT, C: C, eps: c.normEps) }
      if let ad = adapters {
        for site in [LoRALayout.Site.gate, .up] { ad.backward(site, layer: l, dout: d.dgu, ldo: 2 * I, x: s.n2, dinp: d.dn) }
      }
      rmsnormBackward(d.dresidual, gradient(w.mlpNorm), d.dn, s.res2, p + w.mlpNorm, s.r2, N: BT, C: C, scratch: d.scratch)
      // dresidual is now ∂/∂res2; the attention branch:
      try products.backward(d.datty, d.dresidual, s.atty, w: w.o, layout: .outIn, N: BT, C: NH * HS, OC: C, weightGradients: wg)
      adapters?.backward(.o, layer: l, dout: d.dresidual, ldo: C, x: s.atty, dinp: d.datty)
      // Recomputed probabilities from the rotated q‖k‖v (and the same output, written again where it already is).
      if recomputesAttention { gqaAttentionForward(s.atty, s.att, s.qkv, B: B, T: T, NH: NH, NKV: NKV, HS: HS) }
      gqaAttentionBackward(d.dqkv, d.datty, s.qkv, s.att, B: B, T: T, NH: NH, NKV: NKV, HS: HS, scratch: d.attScratch)
      ropeBackward(d.dqkv, d.dqkv, rope, B: B, T: T, NH: NH + NKV, HS: HS, stride: W)
      try products.backward(d.dn, d.dqkv, s.n1, w: w.qkv, layout: .outIn, N: BT, C: C, OC: W, weightGradients: wg)
      if recomputesAttention { rmsnormForward(s.n1, s.r1, x, p + w.attnNorm, N: BT, C: C, eps: c.normEps) }
      if let ad = adapters {
        for site in [LoRALayout.Site.q, .k, .v] { ad.backward(site, layer: l, dout: d.dqkv, ldo: W, x: s.n1, dinp: d.dn) }
      }
      rmsnormBackward(d.dresidual, gradient(w.attnNorm), d.dn, x, p + w.attnNorm, s.r1, N: BT, C: C, scratch: d.scratch)
    }
    if wg { embeddingBackward(gradients.pointer + layout.wte, d.dresidual, head.tokens, N: BT, C: C) }
    adapters?.embeddingRowsBackward(dx: d.dresidual, tokens: head.tokens)
  }
}

/// The LLaMA body's activations kept from forward for backward: per layer the normalised inputs and their
/// reciprocal RMS, the rotated q‖k‖v, attention probabilities and output, the gate‖up projections, the SwiGLU
/// output and both residual streams. One allocation.
final class LlamaActivations {
  /// One layer's slices.
  struct Layer {
    let n1, r1, qkv, att, atty, res2, n2, r2, gu, h, res3: P
  }

  let storage: FloatBuffer
  let encoded, proj, nf, rf: P
  private let layers: [Layer]
  var floatCount: Int { storage.count }

  func layer(_ l: Int) -> Layer { layers[l] }

  /// `shared`: keep the attention probabilities, the normalised inputs and the SwiGLU output of one layer only
  /// (every layer shares them; backward recomputes them where a frozen base's adapters need them).
  init(_ c: GPTConfig, B: Int, T: Int, shared: Bool) {
    let (C, L, NH, NKV, HS, I) = (c.channels, c.layers, c.heads, c.kvHeads, c.headSize, c.intermediate)
    let BT = B * T, W = (NH + 2 * NKV) * HS
    let perLayer = [BT, BT * W, BT * NH * HS, BT * C, BT, BT * 2 * I, BT * C]  // r1 qkv atty res2 r2 gu res3
    let keptOnce = [B * NH * T * T, BT * C, BT * C, BT * I]                      // att n1 n2 h
    var sizes = [BT * C, BT * C, BT * C, BT]
    for _ in 0..<L { sizes += perLayer }
    for _ in 0..<(shared ? 1 : L) { sizes += keptOnce }
    let (s, ptrs) = carve(sizes)
    storage = s
    (encoded, proj, nf, rf) = (ptrs[0], ptrs[1], ptrs[2], ptrs[3])
    let once = 4 + L * perLayer.count
    layers = (0..<L).map { l in
      let q = Array(ptrs[(4 + l * perLayer.count)..<(4 + (l + 1) * perLayer.count)])
      let k = Array(ptrs[(once + (shared ? 0 : l) * keptOnce.count)...].prefix(keptOnce.count))
      return Layer(n1: k[1], r1: q[0], qkv: q[1], att: k[0], atty: q[2], res2: q[3], n2: k[2], r2: q[4], gu: q[5], h: k[3], res3: q[6])
    }
  }
}

/// Scratch for the LLaMA body's activation gradients: one layer's worth at a time.
final class LlamaGradients {
  let storage: FloatBuffer
  let dresidual, dn, datty, dqkv, dgu, dh, scratch, attScratch: P
  var floatCount: Int { storage.count }

  init(_ c: GPTConfig, B: Int, T: Int) {
    let (C, NH, NKV, HS, I) = (c.channels, c.heads, c.kvHeads, c.headSize, c.intermediate)
    let BT = B * T, W = (NH + 2 * NKV) * HS
    let threads = max(Parallel.threads, 1)
    let (s, p) = carve([BT * C, BT * C, BT * NH * HS, BT * W, BT * 2 * I, BT * I, threads * C, threads * T * T])
    storage = s
    (dresidual, dn, datty, dqkv, dgu, dh, scratch, attScratch) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7])
  }
}
