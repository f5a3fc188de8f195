import AgoraTensor

/// The arithmetic of a model's matrix products.
public enum Precision: String, Codable, Sendable, CaseIterable {
  /// binary32 everywhere (OpenBLAS sgemm).
  case fp32
  /// Mixed precision: the layers' matrix products take bf16 inputs (weights and activations rounded to nearest
  /// even) and accumulate in binary32 on oneDNN; everything else — master weights, gradients, AdamW's state,
  /// norms, softmax, attention, the loss — stays binary32. bf16 has binary32's exponent range, so no loss scaling.
  /// On a CPU where oneDNN has no bf16 kernels (no AVX512_BF16) the same arithmetic is emulated — the rounded
  /// operands multiplied by OpenBLAS in binary32 — and is slower than fp32 (`Precision.bf16IsNative`).
  case bf16

  /// Whether bf16 products run on bf16 hardware kernels here.
  public static var bf16IsNative: Bool { BF16GEMM.native }

  /// The arithmetic as it runs on this machine, for logs and reports.
  public var summary: String {
    self == .fp32 ? "fp32" : Self.bf16IsNative ? "bf16 (oneDNN)" : "bf16 (emulated: this CPU has no bf16 kernels)"
  }
}

/// A model's linear layers, y = x · W (+ b), forward and backward, in the model's precision. In bf16 the weights
/// are rounded once per forward pass into a bf16 copy laid out like the parameters; each product's activation
/// operands are rounded into scratch just before it.
final class Products {
  let precision: Precision
  private let parameters: FloatBuffer, gradients: FloatBuffer
  private let mixed: (gemm: BF16GEMM, weights: BF16Buffer, a: BF16Buffer, b: BF16Buffer)?
  /// bf16 on a CPU without bf16 kernels: binary32 copies of the bf16-rounded weights and operands.
  private let emulated: (weights: FloatBuffer, a: FloatBuffer, b: FloatBuffer)?

  /// `scratchA` and `scratchB`: the most values an activation operand of a forward or backward product has
  /// (the first and second operands of a backward pass).
  init(precision: Precision, parameters: FloatBuffer, gradients: FloatBuffer, scratchA: Int, scratchB: Int) throws {
    self.precision = precision
    self.parameters = parameters
    self.gradients = gradients
    switch precision {
    case .bf16 where BF16GEMM.native:
      mixed = (try BF16GEMM(), BF16Buffer(count: parameters.count), BF16Buffer(count: scratchA), BF16Buffer(count: scratchB))
      emulated = nil
    case .bf16:
      mixed = nil
      emulated = (FloatBuffer(count: parameters.count), FloatBuffer(count: scratchA), FloatBuffer(count: scratchB))
    case .fp32:
      (mixed, emulated) = (nil, nil)
    }
  }

  /// Rounds the weights into their bf16 copy (bf16 only); a forward pass starts with it.
  func refreshWeights() {
    if let m = mixed { BF16.convert(parameters.pointer, m.weights.pointer, count: parameters.count) }
    if let e = emulated { BF16.round(parameters.pointer, e.weights.pointer, count: parameters.count) }
  }

  /// inp (N, C) → out (N, OC) = inp · W + b, W at parameter offset `w`, b at `bias` (or none).
  func forward(_ out: P, _ inp: CP, w: Int, bias: Int? = nil, layout: WeightLayout, N: Int, C: Int, OC: Int) throws {
    guard let m = mixed else {
      var (x, weights) = (inp, parameters.pointer)
      if let e = emulated {
        BF16.round(inp, e.a.pointer, count: N * C)
        (x, weights) = (UnsafePointer(e.a.pointer), e.weights.pointer)
      }
      matmulForward(out, x, weights + w, bias.map { UnsafePointer(parameters.pointer + $0) }, N: N, C: C, OC: OC, layout: layout)
      return
    }
    if let bias { fillRows(out, parameters.pointer + bias, N: N, OC: OC) }
    BF16.convert(inp, m.a.pointer, count: N * C)
    let outIn = layout == .outIn
    try m.gemm.gemm(transA: false, transB: outIn, m: N, n: OC, k: C, a: m.a.pointer, lda: C, b: m.weights.pointer + w, ldb: outIn ? C : OC,
                    accumulate: bias != nil, c: out, ldc: OC)
  }

  /// dout (N, OC) → dinp (N, C) (overwritten), dW and db (gradient offsets `w`, `bias`) accumulated — unless
  /// the weights are frozen (`weightGradients` false: a LoRA model's base), when only dinp is computed.
  func backward(_ dinp: P, _ dout: CP, _ inp: CP, w: Int, bias: Int? = nil, layout: WeightLayout, N: Int, C: Int, OC: Int,
                weightGradients: Bool = true) throws {
    let g = gradients.pointer
    if !weightGradients { return try inputGradient(dinp, dout, w: w, layout: layout, N: N, C: C, OC: OC) }
    guard let m = mixed else {
      var (d, x, weights) = (dout, inp, parameters.pointer)
      if let e = emulated {
        BF16.round(dout, e.a.pointer, count: N * OC)
        BF16.round(inp, e.b.pointer, count: N * C)
        (d, x, weights) = (UnsafePointer(e.a.pointer), UnsafePointer(e.b.pointer), e.weights.pointer)
      }
      // Bias gradients sum the fp32 output gradients, as on the native path.
      matmulBackward(dinp, g + w, nil, d, x, weights + w, N: N, C: C, OC: OC, layout: layout)
      if let bias { biasBackward(g + bias, dout, N: N, OC: OC) }
      return
    }
    BF16.convert(dout, m.a.pointer, count: N * OC)
    BF16.convert(inp, m.b.pointer, count: N * C)
    let wb = UnsafePointer(m.weights.pointer + w), da = UnsafePointer(m.a.pointer), xb = UnsafePointer(m.b.pointer)
    switch layout {
    case .inOut:
      // dinp = dout · Wᵀ (W is C × OC); dW (C × OC) += inpᵀ · dout
      try m.gemm.gemm(transA: false, transB: true, m: N, n: C, k: OC, a: da, lda: OC, b: wb, ldb: OC, accumulate: false, c: dinp, ldc: C)
      try m.gemm.gemm(transA: true, transB: false, m: C, n: OC, k: N, a: xb, lda: C, b: da, ldb: OC, accumulate: true, c: g + w, ldc: OC)
    case .outIn:
      // dinp = dout · W (W is OC × C); dW (OC × C) += doutᵀ · inp
      try m.gemm.gemm(transA: false, transB: false, m: N, n: C, k: OC, a: da, lda: OC, b: wb, ldb: C, accumulate: false, c: dinp, ldc: C)
      try m.gemm.gemm(transA: true, transB: false, m: OC, n: C, k: N, a: da, lda: OC, b: xb, ldb: C, accumulate: true, c: g + w, ldc: C)
    }
    if let bias { biasBackward(g + bias, dout, N: N, OC: OC) }
  }

  /// dinp (N, C) = dout · W (overwritten): the backward pass through a frozen layer.
  private func inputGradient(_ dinp: P, _ dout: CP, w: Int, layout: WeightLayout, N: Int, C: Int, OC: Int) throws {
    let outIn = layout == .outIn
    guard let m = mixed else {
      var (d, weights) = (dout, parameters.pointer)
      if let e = emulated {
        BF16.round(dout, e.a.pointer, count: N * OC)
        (d, weights) = (UnsafePointer(e.a.pointer), e.weights.pointer)
      }
      // .inOut: W is C × OC, dinp = dout · Wᵀ; .outIn: W is OC × C, dinp = dout · W.
      BLAS.sgemm(transA: false, transB: !outIn, m: N, n: C, k: OC, a: d, lda: OC, b: weights + w, ldb: outIn ? C : OC,
                 beta: 0, c: dinp, ldc: C)
      return
    }
    BF16.convert(dout, m.a.pointer, count: N * OC)
    try m.gemm.gemm(transA: false, transB: !outIn, m: N, n: C, k: OC, a: m.a.pointer, lda: OC, b: m.weights.pointer + w,
                    ldb: outIn ? C : OC, accumulate: false, c: dinp, ldc: C)
  }
}
