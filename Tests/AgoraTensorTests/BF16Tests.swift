import AgoraTensor
import Testing

/// bf16 rounding and oneDNN's bf16 × bf16 → fp32 products (issue #18).
@Suite struct BF16Tests {
  @Test func roundsToNearestEvenAndKeepsSpecials() {
    // 1 + 2⁻⁸ is halfway between bf16 1 and 1 + 2⁻⁷: ties go to the even mantissa (1); a hair above goes up.
    #expect(BF16.from(1 + 0x1p-8) == BF16.from(1))
    #expect(BF16.from(Float(bitPattern: Float(1 + 0x1p-8).bitPattern + 1)) == BF16.from(1 + 0x1p-7))
    // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶ (even): up.
    #expect(BF16.from(1 + 3 * 0x1p-8) == BF16.from(1 + 0x1p-6))
    #expect(BF16.float(BF16.from(-2.5)) == -2.5)
    #expect(BF16.float(BF16.from(.infinity)) == .infinity)
    #expect(BF16.float(BF16.from(Float.greatestFiniteMagnitude)) == .infinity, "rounds up past the largest bf16")
    // A NaN whose payload sits only in the low half must not round into ±∞.
    let lowNaN = Float(bitPattern: 0x7F80_0001)
    #expect(lowNaN.isNaN && BF16.float(BF16.from(lowNaN)).isNaN)
    // The vector path equals the scalar one, tail included.
    var g = Floats(seed: 4)
    var xs = (0..<1000).map { _ in g.float() * 100 }
    xs[17] = lowNaN
    xs[18] = -.infinity
    xs[19] = Float(bitPattern: 0xFF80_0001)  // a negative NaN with a low payload, in the same 16-lane vector
    xs[33] = .nan
    xs[34] = -.greatestFiniteMagnitude
    let out = UnsafeMutablePointer<UInt16>.allocate(capacity: xs.count)
    defer { out.deallocate() }
    BF16.convert(xs, out, count: xs.count)
    #expect((0..<xs.count).allSatisfy { i in out[i] == BF16.from(xs[i]) })
    // Rounding in binary32 (the emulation of bf16 products on CPUs without bf16 kernels) keeps the same values.
    var rounded = xs
    BF16.round(xs, &rounded, count: xs.count)
    #expect((0..<xs.count).allSatisfy { i in rounded[i].bitPattern == BF16.float(out[i]).bitPattern })
  }

  /// Every transposition, with and without accumulation, equals a double-precision product of the same bf16
  /// values to fp32 accumulation's rounding. Needs oneDNN's bf16 kernels (AVX512_BF16 or AMX); elsewhere the
  /// model emulates them (MixedPrecisionTests covers that path).
  @Test(.enabled(if: BF16GEMM.native, "oneDNN has no bf16 kernels on this CPU (no AVX512_BF16)"), arguments: [(false, false), (false, true), (true, false)], [false, true])
  func gemmEqualsTheProductOfTheRoundedInputs(trans: (Bool, Bool), accumulate: Bool) throws {
    let (transA, transB) = trans
    let m = 37, n = 45, k = 70
    let lda = transA ? m : k, ldb = transB ? k : n
    var g = Floats(seed: 7)
    let a = (0..<(m * k)).map { _ in g.float() }, b = (0..<(k * n)).map { _ in g.float() }
    let ab = a.map(BF16.from), bb = b.map(BF16.from)
    let c0 = (0..<(m * n)).map { _ in g.float() }
    var c = c0, ref = c0
    let gemm = try BF16GEMM()
    try gemm.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: ab, lda: lda, b: bb, ldb: ldb, accumulate: accumulate, c: &c, ldc: n)
    BLAS.sgemmNaive(transA: transA, transB: transB, m: m, n: n, k: k, a: ab.map(BF16.float), lda: lda, b: bb.map(BF16.float), ldb: ldb,
                    beta: accumulate ? 1 : 0, c: &ref, ldc: n)
    var worst: Float = 0
    for i in 0..<(m * n) { worst = max(worst, abs(c[i] - ref[i])) }
    #expect(worst < 1e-4, "worst absolute error \(worst)")
    // Not the fp32 product: rounding the inputs to bf16 shows (the test would not notice a product in fp32).
    var exact = c0
    BLAS.sgemmNaive(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: accumulate ? 1 : 0, c: &exact, ldc: n)
    #expect((0..<(m * n)).contains { abs(exact[$0] - c[$0]) > 1e-3 })
  }
}

extension BF16Tests {
  /// The oneDNN plumbing (strides of transposed operands, the sum post-op, cached primitives) with binary32
  /// operands, which every CPU runs: equal to OpenBLAS's product.
  @Test(arguments: [(false, false), (false, true), (true, false), (true, true)], [false, true])
  func oneDNNProductsFollowBLAS(trans: (Bool, Bool), accumulate: Bool) throws {
    let (transA, transB) = trans
    let m = 33, n = 20, k = 51
    let lda = transA ? m + 3 : k + 2, ldb = transB ? k + 1 : n + 5, ldc = n + 4
    var g = Floats(seed: 8)
    let a = (0..<((transA ? k : m) * lda)).map { _ in g.float() }, b = (0..<((transB ? n : k) * ldb)).map { _ in g.float() }
    let c0 = (0..<(m * ldc)).map { _ in g.float() }
    var c = c0, ref = c0
    let gemm = try BF16GEMM()
    for _ in 0..<2 {  // the second call reuses the cached primitive
      c = c0
      try gemm.gemmF32(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, accumulate: accumulate, c: &c, ldc: ldc)
    }
    BLAS.sgemmNaive(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: accumulate ? 1 : 0, c: &ref, ldc: ldc)
    var worst: Float = 0
    for i in 0..<m { for j in 0..<n { worst = max(worst, abs(c[i * ldc + j] - ref[i * ldc + j])) } }
    #expect(worst < 1e-4, "worst absolute error \(worst)")
    // Padding columns of C are not written.
    #expect((0..<m).allSatisfy { i in (n..<ldc).allSatisfy { c[i * ldc + $0] == c0[i * ldc + $0] } })
  }
}

/// Deterministic floats in [−1, 1) from a 64-bit linear congruential sequence (Knuth's MMIX constants).
struct Floats {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func float() -> Float {
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return Float(state >> 40) / Float(1 << 24) * 2 - 1
  }
}
