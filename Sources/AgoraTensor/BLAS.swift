import COpenBLAS

/// Row-major single-precision matrix multiply: `C = alpha * op(A) * op(B) + beta * C`.
///
/// Every matmul of the trainer comes here. OpenBLAS runs single-threaded inside each call and the rows of
/// `C` are split over `Parallel.threads` Swift threads, so OpenBLAS's own worker threads never spin against
/// the trainer's other kernels. `sgemmNaive` is the reference twin used by the tests.
public enum BLAS {
  /// Pins OpenBLAS to one thread per call. Called once by anything that uses `sgemm`.
  public static let configured: Bool = {
    openblas_set_num_threads(1)
    return true
  }()

  /// The OpenBLAS build string (core type and threading), for benchmark reports.
  public static var config: String { String(cString: openblas_get_config()) }
  public static var coreName: String { String(cString: openblas_get_corename()) }

  /// Sets how many threads OpenBLAS itself uses (only for measuring its own peak).
  public static func setOpenBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }
  /// How many threads OpenBLAS itself uses now.
  public static var openBLASThreads: Int { Int(openblas_get_num_threads()) }

  /// `C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C`, row-major, parallel over rows of `C`.
  @inline(__always)
  public static func sgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, parallel: Bool = true
  ) {
    _ = configured
    let threads = parallel ? min(Parallel.threads, max(1, m / 32)) : 1
    if threads <= 1 {
      sgemm1(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
             a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
      return
    }
    // Split rows of C in multiples of 8 (the kernel's row blocking) so no thread gets a ragged tail.
    Parallel.forRange(threads) { s, e in
      for t in s..<e {
        let r0 = (m * t / threads) & ~7
        let r1 = t == threads - 1 ? m : (m * (t + 1) / threads) & ~7
        if r1 <= r0 { continue }
        // Row r of op(A) is row r of A (no transpose) or column r of A (transpose).
        let aOff = transA ? r0 : r0 * lda
        sgemm1(transA: transA, transB: transB, m: r1 - r0, n: n, k: k, alpha: alpha,
               a: a + aOff, lda: lda, b: b, ldb: ldb, beta: beta, c: c + r0 * ldc, ldc: ldc)
      }
    }
  }

  /// One OpenBLAS call on the calling thread (OpenBLAS pinned to one thread first: attention calls this from
  /// every Swift thread, and in bf16 runs it is the only way into OpenBLAS, which would otherwise fork its own
  /// workers inside each call and leave them spinning against the trainer's kernels).
  @inline(__always)
  public static func sgemm1(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    _ = configured
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
  }

  /// `y(n) = op(A) · x` for a row-major A with `rows` rows of `cols` (op: A, or Aᵀ with `transA`), split
  /// over the threads by output values: each thread reads its own part of A once (a matrix-vector product is
  /// bound by reading A, so this is the whole of batch-1 decoding's arithmetic).
  public static func sgemv(transA: Bool, rows: Int, cols: Int, a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>,
                           y: UnsafeMutablePointer<Float>, threads: Int = Parallel.threads) {
    _ = configured
    let n = transA ? cols : rows
    let parts = min(threads, max(1, n / 64))
    Parallel.forRange(parts, minChunk: 1, threads: parts) { s, e in
      for t in s..<e {
        let j0 = (n * t / parts) & ~15, j1 = t == parts - 1 ? n : (n * (t + 1) / parts) & ~15
        if j1 <= j0 { continue }
        if transA {
          cblas_sgemv(CblasRowMajor, CblasTrans, Int32(rows), Int32(j1 - j0), 1, a + j0, Int32(lda), x, 1, 0, y + j0, 1)
        } else {
          cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(j1 - j0), Int32(cols), 1, a + j0 * lda, Int32(lda), x, 1, 0, y + j0, 1)
        }
      }
    }
  }

  /// The reference twin of `sgemm`: three loops, double accumulation.
  public static func sgemmNaive(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    for i in 0..<m {
      for j in 0..<n {
        var acc = 0.0
        for p in 0..<k {
          let av = transA ? a[p * lda + i] : a[i * lda + p]
          let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
          acc += Double(av) * Double(bv)
        }
        let prev = beta == 0 ? 0 : beta * c[i * ldc + j]
        c[i * ldc + j] = alpha * Float(acc) + prev
      }
    }
  }
}
