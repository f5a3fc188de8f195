import CDNNL
import Foundation

/// bfloat16 numbers (the upper half of a binary32: 8 exponent bits, 7 mantissa bits) stored as `UInt16`.
public enum BF16 {
  /// src (binary32) → dst (bf16), rounding to nearest even; NaN stays a (quiet) NaN, ±∞ stays ±∞. Parallel.
  public static func convert(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, count: Int) {
    Parallel.forRange(count / 16, minChunk: 4096) { s, e in
      let from = UnsafeRawPointer(src), to = UnsafeMutableRawPointer(dst)
      for v in s..<e {
        let x = from.loadUnaligned(fromByteOffset: v * 64, as: SIMD16<UInt32>.self)
        to.storeBytes(of: rounded(x), toByteOffset: v * 32, as: SIMD16<UInt16>.self)
      }
    }
    for i in (count / 16 * 16)..<count { dst[i] = from(src[i]) }
  }

  /// src → dst (binary32 values that bf16 represents exactly: `convert` and back). dst may alias src. Parallel.
  public static func round(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forRange(count / 16, minChunk: 4096) { s, e in
      let from = UnsafeRawPointer(src), to = UnsafeMutableRawPointer(dst)
      for v in s..<e {
        let x = from.loadUnaligned(fromByteOffset: v * 64, as: SIMD16<UInt32>.self)
        to.storeBytes(of: SIMD16<UInt32>(truncatingIfNeeded: rounded(x)) &<< 16, toByteOffset: v * 64, as: SIMD16<UInt32>.self)
      }
    }
    for i in (count / 16 * 16)..<count { dst[i] = float(from(src[i])) }
  }

  /// Branch-free on purpose: a lane-wise comparison (`.>`, `replacing(with:where:)`) compiles to a scalar loop
  /// through the stack, which made this 20× slower than memory bandwidth. NaN lanes (|x| > 0x7F800000) get an
  /// all-ones mask from the sign of 0x7F800000 − |x|, shifted arithmetically.
  @inline(__always)
  static func rounded(_ x: SIMD16<UInt32>) -> SIMD16<UInt16> {
    let rounded = (x &+ 0x7FFF &+ ((x &>> 16) & 1)) &>> 16
    let magnitude = SIMD16<Int32>(truncatingIfNeeded: x & 0x7FFF_FFFF)
    let nan = SIMD16<UInt32>(truncatingIfNeeded: (0x7F80_0000 &- magnitude) &>> 31)
    let quiet = (x &>> 16) | 0x40
    return SIMD16<UInt16>(truncatingIfNeeded: (rounded & ~nan) | (quiet & nan))
  }

  /// One binary32 to bf16 (as `convert`).
  @inline(__always)
  public static func from(_ f: Float) -> UInt16 {
    let x = f.bitPattern
    if f.isNaN { return UInt16(truncatingIfNeeded: (x >> 16) | 0x40) }
    return UInt16(truncatingIfNeeded: (x &+ 0x7FFF &+ ((x >> 16) & 1)) >> 16)
  }

  /// bf16 → binary32 (exact).
  @inline(__always)
  public static func float(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }
}

/// The OpenMP runtime's settings oneDNN runs on.
public enum OpenMPEnvironment {
  /// Makes this process run with `OMP_WAIT_POLICY=passive` unless the caller chose a policy: without it,
  /// oneDNN's idle OpenMP threads spin between products and take the cores from the trainer's own kernels and
  /// OpenBLAS (measured: half of both lost). libgomp reads the variable once, when the process loads it, so a
  /// process started without it sets it and executes itself again (same arguments, same PID). Only on CPUs where
  /// oneDNN has bf16 kernels (Linux lists `avx512_bf16` or `amx_bf16`): elsewhere oneDNN never runs a product
  /// and the re-execution would only cost start-up time. Call first thing.
  public static func ensurePassiveWait() {
    guard getenv("OMP_WAIT_POLICY") == nil, cpuHasBF16 else { return }
    setenv("OMP_WAIT_POLICY", "passive", 1)
    execv("/proc/self/exe", CommandLine.unsafeArgv)
    // execv returned: it failed; carry on with libgomp's default policy.
  }

  /// Whether /proc/cpuinfo's flags name a bf16 extension oneDNN uses.
  static var cpuHasBF16: Bool {
    guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let flags = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
    let set = Set(flags.split(whereSeparator: { $0 == " " || $0 == "\t" }))
    return set.contains("avx512_bf16") || set.contains("amx_bf16")
  }
}

/// A 64-byte aligned array of bf16 values.
public final class BF16Buffer: @unchecked Sendable {
  public let count: Int
  public let pointer: UnsafeMutablePointer<UInt16>

  public init(count: Int) {
    precondition(count >= 0, "BF16Buffer count must not be negative")
    self.count = count
    let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 32) * 2, alignment: 64)
    pointer = raw.initializeMemory(as: UInt16.self, repeating: 0, count: max(count, 32))
  }

  deinit { pointer.deallocate() }
}

/// What went wrong in a bf16 matrix product: oneDNN's status and the call.
public struct MixedPrecisionError: Error, CustomStringConvertible {
  public let call: String
  public let status: Int
  public var description: String { "oneDNN \(call) failed (status \(status)); bf16 products need libdnnl (Debian libdnnl-dev)" }
}

/// bf16 × bf16 → fp32 matrix products on oneDNN's matmul primitive (Debian's libdnnl 2.6; on a CPU with
/// AVX512_BF16 it picks its `brg:avx512_core_bf16` kernels). Accumulation is fp32; C is overwritten (β = 0) or
/// added to (β = 1, a sum post-op). A primitive is made once per shape (0.2–0.6 ms) and kept; its memory
/// objects are re-pointed at each call's data. An instance serves one caller at a time (calls must not overlap).
public final class BF16GEMM {
  private struct Shape: Hashable {
    let transA, transB: Bool
    let m, n, k, lda, ldb, ldc: Int
    let accumulate: Bool
    var f32 = false
  }

  private final class Entry {
    let primitive: dnnl_primitive_t, descriptor: dnnl_primitive_desc_t
    let a: dnnl_memory_t, b: dnnl_memory_t, c: dnnl_memory_t
    init(primitive: dnnl_primitive_t, descriptor: dnnl_primitive_desc_t, a: dnnl_memory_t, b: dnnl_memory_t, c: dnnl_memory_t) {
      (self.primitive, self.descriptor, self.a, self.b, self.c) = (primitive, descriptor, a, b, c)
    }
    deinit {
      dnnl_memory_destroy(a)
      dnnl_memory_destroy(b)
      dnnl_memory_destroy(c)
      dnnl_primitive_destroy(primitive)
      dnnl_primitive_desc_destroy(descriptor)
    }
  }

  private let engine: dnnl_engine_t
  private let stream: dnnl_stream_t
  private var entries: [Shape: Entry] = [:]
  private var ompThreads = 0

  /// Whether oneDNN has bf16 matrix-product kernels on this CPU (AVX512_BF16 or AMX; oneDNN 2.6 has none for
  /// AVX2-only CPUs). Probed once with a small product.
  public static let native: Bool = {
    guard let g = try? BF16GEMM() else { return false }
    let a = [UInt16](repeating: BF16.from(1), count: 64)
    var c = [Float](repeating: 0, count: 64)
    guard (try? g.gemm(transA: false, transB: false, m: 8, n: 8, k: 8, a: a, lda: 8, b: a, ldb: 8, accumulate: false, c: &c, ldc: 8)) != nil else { return false }
    return c.allSatisfy { $0 == 8 }
  }()

  public init() throws {
    var e: dnnl_engine_t?
    try Self.check(dnnl_engine_create(&e, dnnl_cpu, 0), "dnnl_engine_create")
    var s: dnnl_stream_t?
    do { try Self.check(dnnl_stream_create(&s, e, UInt32(dnnl_stream_default_flags.rawValue)), "dnnl_stream_create") } catch {
      dnnl_engine_destroy(e)
      throw error
    }
    engine = e!
    stream = s!
  }

  deinit {
    entries.removeAll()
    dnnl_stream_destroy(stream)
    dnnl_engine_destroy(engine)
  }

  private static func check(_ status: dnnl_status_t, _ call: String) throws {
    guard status == dnnl_success else { throw MixedPrecisionError(call: call, status: Int(status.rawValue)) }
  }

  /// `C(M,N) = op(A)(M,K) · op(B)(K,N) (+ C when accumulate)`, row-major like `BLAS.sgemm`, A and B in bf16, C in
  /// binary32. Runs on `Parallel.threads` OpenMP threads.
  public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<UInt16>, lda: Int,
                   b: UnsafePointer<UInt16>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) throws {
    try run(Shape(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, accumulate: accumulate),
            UnsafeRawPointer(a), UnsafeRawPointer(b), c)
  }

  /// The same product with binary32 operands: the plumbing (strides, transpositions, accumulation, primitive
  /// cache) on any CPU, for tests.
  public func gemmF32(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                      b: UnsafePointer<Float>, ldb: Int, accumulate: Bool, c: UnsafeMutablePointer<Float>, ldc: Int) throws {
    try run(Shape(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, accumulate: accumulate, f32: true),
            UnsafeRawPointer(a), UnsafeRawPointer(b), c)
  }

  private func run(_ shape: Shape, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ c: UnsafeMutablePointer<Float>) throws {
    let entry = try entries[shape] ?? make(shape)
    if ompThreads != Parallel.threads {
      omp_set_num_threads(Int32(Parallel.threads))
      ompThreads = Parallel.threads
    }
    try Self.check(dnnl_memory_set_data_handle(entry.a, UnsafeMutableRawPointer(mutating: a)), "dnnl_memory_set_data_handle")
    try Self.check(dnnl_memory_set_data_handle(entry.b, UnsafeMutableRawPointer(mutating: b)), "dnnl_memory_set_data_handle")
    try Self.check(dnnl_memory_set_data_handle(entry.c, UnsafeMutableRawPointer(c)), "dnnl_memory_set_data_handle")
    var args = [dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: entry.a), dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: entry.b),
                dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: entry.c)]
    try Self.check(dnnl_primitive_execute(entry.primitive, stream, Int32(args.count), &args), "dnnl_primitive_execute")
    try Self.check(dnnl_stream_wait(stream), "dnnl_stream_wait")
  }

  /// The implementation oneDNN chose for a shape (e.g. `brg:avx512_core_bf16`), for benchmark reports.
  public func implementation(transA: Bool, transB: Bool, m: Int, n: Int, k: Int) throws -> String {
    let shape = Shape(transA: transA, transB: transB, m: m, n: n, k: k, lda: transA ? m : k, ldb: transB ? k : n, ldc: n, accumulate: false)
    let entry = try entries[shape] ?? make(shape)
    var info: UnsafePointer<CChar>?
    try Self.check(dnnl_primitive_desc_query(entry.descriptor, dnnl_query_impl_info_str, 0, &info), "dnnl_primitive_desc_query")
    return info.map { String(cString: $0) } ?? "?"
  }

  /// A 2-D descriptor of `rows × cols` with the given strides.
  private static func matrix(_ rows: Int, _ cols: Int, rowStride: Int, colStride: Int, _ type: dnnl_data_type_t) throws -> dnnl_memory_desc_t {
    var md = dnnl_memory_desc_t()
    var dims: [dnnl_dim_t] = [dnnl_dim_t(rows), dnnl_dim_t(cols)]
    var strides: [dnnl_dim_t] = [dnnl_dim_t(rowStride), dnnl_dim_t(colStride)]
    try check(dnnl_memory_desc_init_by_strides(&md, 2, &dims, type, &strides), "dnnl_memory_desc_init_by_strides")
    return md
  }

  private func make(_ s: Shape) throws -> Entry {
    // op(A) is M×K: stored M×K with row stride lda, or (transposed) K×M, so element (i, j) is at j·lda + i.
    let type = s.f32 ? dnnl_f32 : dnnl_bf16
    var a = try Self.matrix(s.m, s.k, rowStride: s.transA ? 1 : s.lda, colStride: s.transA ? s.lda : 1, type)
    var b = try Self.matrix(s.k, s.n, rowStride: s.transB ? 1 : s.ldb, colStride: s.transB ? s.ldb : 1, type)
    var c = try Self.matrix(s.m, s.n, rowStride: s.ldc, colStride: 1, dnnl_f32)
    var desc = dnnl_matmul_desc_t()
    try Self.check(dnnl_matmul_desc_init(&desc, &a, &b, nil, &c), "dnnl_matmul_desc_init")
    var attr: dnnl_primitive_attr_t?
    try Self.check(dnnl_primitive_attr_create(&attr), "dnnl_primitive_attr_create")
    defer { dnnl_primitive_attr_destroy(attr) }
    if s.accumulate {
      var ops: dnnl_post_ops_t?
      try Self.check(dnnl_post_ops_create(&ops), "dnnl_post_ops_create")
      defer { dnnl_post_ops_destroy(ops) }
      try Self.check(dnnl_post_ops_append_sum(ops, 1), "dnnl_post_ops_append_sum")
      try Self.check(dnnl_primitive_attr_set_post_ops(attr, ops), "dnnl_primitive_attr_set_post_ops")
    }
    var pd: dnnl_primitive_desc_t?
    try Self.check(dnnl_primitive_desc_create(&pd, &desc, attr, engine, nil), "dnnl_primitive_desc_create (matmul \(s.m)×\(s.k)·\(s.k)×\(s.n))")
    var prim: dnnl_primitive_t?
    do { try Self.check(dnnl_primitive_create(&prim, pd), "dnnl_primitive_create") } catch {
      dnnl_primitive_desc_destroy(pd)
      throw error
    }
    var ma: dnnl_memory_t?, mb: dnnl_memory_t?, mc: dnnl_memory_t?
    try Self.check(dnnl_memory_create(&ma, &a, engine, nil), "dnnl_memory_create")
    try Self.check(dnnl_memory_create(&mb, &b, engine, nil), "dnnl_memory_create")
    try Self.check(dnnl_memory_create(&mc, &c, engine, nil), "dnnl_memory_create")
    let entry = Entry(primitive: prim!, descriptor: pd!, a: ma!, b: mb!, c: mc!)
    entries[s] = entry
    return entry
  }
}
