@testable import AgoraTensor
import Testing

@Suite(.serialized) struct BLASTests {
  /// OpenBLAS's own thread count is what Agora sets: one per call once `BLAS.configured` has run (the trainer's
  /// threads split the rows; OpenBLAS's workers would contend with them), and what a benchmark asks for.
  @Test func openBLASThreadsAreWhatAgoraSets() {
    _ = BLAS.configured
    let before = BLAS.openBLASThreads
    defer { BLAS.setOpenBLASThreads(before) }
    #expect(before == 1)
    BLAS.setOpenBLASThreads(2)
    #expect(BLAS.openBLASThreads == 2)
    #expect(!BLAS.config.isEmpty)
  }

  /// Fills a buffer with reproducible values in [-1, 1).
  func random(_ n: Int, seed: UInt64) -> FloatBuffer {
    var s = seed
    let b = FloatBuffer(count: n)
    for i in 0..<n {
      s = s &* 6364136223846793005 &+ 1442695040888963407
      b[i] = Float(Int64(bitPattern: s >> 11) % 2000) / 1000 - 1
    }
    return b
  }

  @Test(arguments: [(false, false), (false, true), (true, false), (true, true)])
  func sgemmMatchesNaiveOnAwkwardShapes(transA: Bool, transB: Bool) {
    // Odd sizes, strides larger than the matrix, beta ≠ 0, row counts that split unevenly over threads.
    for (m, n, k) in [(1, 1, 1), (7, 5, 3), (67, 33, 129), (130, 17, 64)] {
      let lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 2, ldc = n + 5
      let a = random((transA ? k : m) * lda, seed: 1), b = random((transB ? n : k) * ldb, seed: 2)
      let c1 = random(m * ldc, seed: 3), c2 = FloatBuffer(count: m * ldc)
      c2.copy(from: c1)
      BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a.pointer, lda: lda, b: b.pointer, ldb: ldb,
                 beta: 0.25, c: c1.pointer, ldc: ldc)
      BLAS.sgemmNaive(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a.pointer, lda: lda, b: b.pointer, ldb: ldb,
                      beta: 0.25, c: c2.pointer, ldc: ldc)
      var worst: Float = 0
      for i in 0..<m { for j in 0..<n { worst = max(worst, abs(c1[i * ldc + j] - c2[i * ldc + j])) } }
      #expect(worst < 1e-4 * Float(k), "m=\(m) n=\(n) k=\(k): max difference \(worst)")
      // Padding columns beyond n are untouched.
      if ldc > n { #expect(c1[ldc - 1] == c2[ldc - 1]) }
    }
  }

  @Test func parallelChunksCoverEveryIndexOnce() {
    for count in [0, 1, 2, 3, 17, 1000] {
      var hits = [Int](repeating: 0, count: count)
      hits.withUnsafeMutableBufferPointer { h in
        Parallel.forChunks(count, chunks: 3) { _, s, e in for i in s..<e { h[i] += 1 } }
      }
      #expect(hits.allSatisfy { $0 == 1 })
    }
  }
}

@Suite struct VectorMathTests {
  @Test func expMatchesLibmAcrossTheRange() {
    var worst = 0.0
    var x: Float = -87
    while x < 88 {
      let ours = Double(VectorMath.exp(x)), ref = Foundation_exp(Double(x))
      worst = max(worst, abs(ours - ref) / ref)
      x += 0.0137
    }
    #expect(worst < 1e-6, "worst relative error \(worst)")
  }

  @Test func expSaturatesInsteadOfWrapping() {
    #expect(VectorMath.exp(-1e30) >= 0)
    #expect(VectorMath.exp(-1e30) < 1e-37)
    #expect(VectorMath.exp(1e30).isFinite)
    #expect(VectorMath.exp(-Float.infinity) < 1e-37)
  }

  @Test func tanhIsAccurateAndBounded() {
    for u in stride(from: Float(-30), through: 30, by: 0.05) {
      let ours = VectorMath.tanh(Vec(repeating: u))[0]
      #expect(abs(Double(ours) - Foundation_tanh(Double(u))) < 2e-6, "tanh(\(u)) = \(ours)")
    }
  }
}

#if canImport(Glibc)
import Glibc
func Foundation_exp(_ x: Double) -> Double { Glibc.exp(x) }
func Foundation_tanh(_ x: Double) -> Double { Glibc.tanh(x) }
#else
import Foundation
func Foundation_exp(_ x: Double) -> Double { Foundation.exp(x) }
func Foundation_tanh(_ x: Double) -> Double { Foundation.tanh(x) }
#endif
