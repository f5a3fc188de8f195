import AgoraBench
import AgoraCluster
import AgoraModel
import AgoraTensor
import ArgumentParser
import Foundation

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Benchmarks (release builds only mean anything).", subcommands: [TrainerBench.self, LoRABench.self, GenerateBench.self, TokenizerBench.self, TransportBench.self, CoordinatorBench.self, SecureAggregationBench.self, ExportBench.self])

  struct TrainerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "trainer", abstract: "Time AdamW training steps and report ms/step, tokens/s, GFLOP/s, MFU and peak memory.")

    @OptionGroup var model: ModelOptions

    @Option(help: "Timed steps (after 2 warm-up steps).")
    var steps: Int = 10

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    func run() throws {
      model.apply()
      // Under mpirun -np K: K ranks train data-parallel (each its own batch of B rows), gradients summed with
      // MPI_Allreduce every step, as a node spanning a cluster does; rank 0 reports.
      if let cluster = try Cluster.fromEnvironment() { return try runCluster(cluster) }
      let c = try GPTConfig.preset(model.presetName)
      let T = model.sequence ?? c.contextLength
      // MFU is against the peak of the arithmetic the products run in: sgemm, or oneDNN's bf16 matmul where native.
      let bf16Peak = model.precision == .bf16 && Precision.bf16IsNative
      var kernel = "sgemm"
      func peakNow() throws -> [Double] {
        guard bf16Peak else { return measureSgemmPeak() }
        let (rates, k) = try measureBF16Peak()
        kernel = "oneDNN bf16 matmul (\(k))"
        return rates
      }
      let peakBefore = try peakNow()
      let gpt = try GPT(config: c, batch: model.batch, sequence: T, seed: 1, precision: model.precision)
      let opt = AdamW(layout: gpt.layout)
      var rng = SplitMix64(seed: 3)
      let BT = model.batch * T
      var times: [Double] = []
      for i in 0..<(steps + 2) {
        let x = (0..<BT).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) }
        let y = (0..<BT).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        gpt.zeroGradients()
        try gpt.forward(tokens: x, targets: y, backwardScale: 1 / Float(BT))
        try gpt.backward()
        clipGradientNorm(gpt.gradients, maxNorm: 1)
        opt.update(params: gpt.parameters, grads: gpt.gradients, lr: 1e-4)
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        if i >= 2 { times.append(dt) }
      }
      // The peak is sampled before and after the steps, so a change of load during the run moves both.
      let peak = median(peakBefore + (try peakNow()))
      let ms = median(times)
      let flops = c.trainingFLOPs(batch: model.batch, sequence: T)
      let gflops = flops / (ms / 1000) / 1e9
      let tokS = Double(BT) / (ms / 1000)
      let rss = peakRSSMiB()
      if json {
        print("{\"preset\":\"\(model.presetName)\",\"precision\":\"\(model.precision.summary)\",\"B\":\(model.batch),\"T\":\(T),\"ms_per_step\":\(ms),\"tokens_per_s\":\(tokS),\"gflops\":\(gflops),\"sgemm_peak_gflops\":\(peak),\"mfu\":\(gflops / peak),\"peak_rss_mib\":\(rss)}")
      } else {
        print("preset \(model.presetName): \(c.parameterCount) parameters, B=\(model.batch) T=\(T), \(Parallel.threads) threads, \(model.precision.summary), OpenBLAS \(BLAS.coreName)")
        print(String(format: "FLOPs/step %.2f GFLOP; %@ peak (2048³, %d threads, median of 8 before and after the steps) %.1f GFLOP/s",
                     flops / 1e9, kernel, Parallel.threads, peak))
        print(String(format: "median %.1f ms/step (min %.1f, max %.1f over %d steps), %.0f tokens/s, %.1f GFLOP/s, MFU %.1f%%, peak RSS %.0f MiB",
                     ms, times.min()!, times.max()!, times.count, tokS, gflops, 100 * gflops / peak, rss))
      }
    }
  }

  struct GenerateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "generate",
      abstract: "Time decoding at batch 1 (greedy): time to first token, tokens/s, peak memory, and its share of the measured memory bandwidth.")

    @Option(help: "Model preset (a random model of it is written to --dir when the directory has none).")
    var preset: String = "bench-14m"
    @Option(help: "Model directory (default: .agora/bench/PRESET).")
    var dir: String?
    @Option(help: "Prompt tokens.")
    var promptTokens: Int = 128
    @Option(help: "New tokens per generation.")
    var newTokens: Int = 256
    @Option(help: "Timed generations (after one warm-up).")
    var repeats: Int = 3
    @Option(help: "Threads (default: every core).")
    var threads: Int?

    func run() throws {
      if let threads { Parallel.threads = max(1, threads) }
      let d = dir ?? ".agora/bench/\(preset)"
      if !FileManager.default.fileExists(atPath: d + "/" + Checkpoint.modelFile) { try GenerationBenchmark.makeCheckpoint(preset: preset, dir: d) }
      print(try GenerationBenchmark.run(dir: d, preset: preset, promptTokens: promptTokens, newTokens: newTokens, repeats: repeats).json)
    }
  }

  struct TokenizerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "tokenizer", abstract: "Time single-threaded encoding of files (MB/s), best of several runs.")

    @Option(help: "tokenizer.json to use.")
    var tokenizer: String

    @Option(help: "Repetitions; the median is reported.")
    var repeats: Int = 5

    @Argument(help: "Text files.")
    var files: [String]

    func run() throws {
      let texts = try files.map { f -> String in
        guard let d = FileManager.default.contents(atPath: f) else { throw CLIError("\(f): cannot read") }
        return String(decoding: d, as: UTF8.self)
      }
      let bytes = texts.reduce(0) { $0 + $1.utf8.count }
      var times: [Double] = []
      var n = 0
      for _ in 0..<repeats {
        let tok = try Tokenizer(contentsOf: tokenizer)  // a fresh cache each run, as a new process has
        let t0 = DispatchTime.now().uptimeNanoseconds
        n = 0
        for t in texts { n += tok.encode(t).count }
        times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
      }
      let s = median(times)
      print(String(format: "{\"bytes\":%d,\"tokens\":%d,\"seconds\":%.4f,\"mb_per_s\":%.2f}", bytes, n, s, Double(bytes) / s / 1e6))
    }
  }
}


/// GFLOP/s of `product`, a 2048³ matrix product, timed `repeats` times (after one untimed call with `warmUp`),
/// one figure per repetition; MFU divides the median step's throughput by the median of these.
private func gflops(repeats: Int, warmUp: Bool, _ product: () throws -> Void) rethrows -> [Double] {
  let n = 2048.0
  if warmUp { try product() }
  var times: [Double] = []
  for _ in 0..<repeats {
    let t0 = DispatchTime.now().uptimeNanoseconds
    try product()
    times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
  }
  return times.map { 2 * n * n * n / $0 / 1e9 }
}

/// GFLOP/s of oneDNN's bf16 matmul (bf16 operands, fp32 result) on 2048³, and the kernel oneDNN chose.
func measureBF16Peak(repeats: Int = 4) throws -> (gflops: [Double], kernel: String) {
  let n = 2048
  let a = BF16Buffer(count: n * n), b = BF16Buffer(count: n * n), c = FloatBuffer(count: n * n)
  for i in 0..<(n * n) { a.pointer[i] = BF16.from(Float(i % 7) * 0.1); b.pointer[i] = BF16.from(Float(i % 5) * 0.1) }
  let g = try BF16GEMM()
  let rates = try gflops(repeats: repeats, warmUp: true) {  // the first call makes the primitive
    try g.gemm(transA: false, transB: false, m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, accumulate: false, c: c.pointer, ldc: n)
  }
  return (rates, try g.implementation(transA: false, transB: false, m: n, n: n, k: n))
}

/// OpenBLAS's own sgemm throughput on 2048³ with as many threads as the kernels use.
func measureSgemmPeak(repeats: Int = 4) -> [Double] {
  let n = 2048
  let a = FloatBuffer(count: n * n), b = FloatBuffer(count: n * n), c = FloatBuffer(count: n * n)
  for i in 0..<(n * n) { a[i] = Float(i % 7) * 0.1; b[i] = Float(i % 5) * 0.1 }
  _ = BLAS.configured
  BLAS.setOpenBLASThreads(Parallel.threads)
  defer { BLAS.setOpenBLASThreads(1) }
  return gflops(repeats: repeats, warmUp: false) {
    BLAS.sgemm1(transA: false, transB: false, m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, beta: 0, c: c.pointer, ldc: n)
  }
}

extension Bench.TrainerBench {
  /// Steps of K data-parallel ranks: ms/step, tokens/s over all ranks, and what the all-reduce costs per step.
  func runCluster(_ cluster: Cluster) throws {
    let c = try GPTConfig.preset(model.presetName)
    let T = model.sequence ?? c.contextLength
    let gpt = try GPT(config: c, batch: model.batch, sequence: T, seed: 1, precision: model.precision)
    let opt = AdamW(layout: gpt.layout)
    var rng = SplitMix64(seed: 3 &+ UInt64(cluster.rank))
    let BT = model.batch * T
    var times: [Double] = [], reduce: [Double] = []
    for i in 0..<(steps + 2) {
      let x = (0..<BT).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) }
      let y = (0..<BT).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) }
      let t0 = DispatchTime.now().uptimeNanoseconds
      gpt.zeroGradients()
      try gpt.forward(tokens: x, targets: y, backwardScale: 1 / Float(BT * cluster.size))
      try gpt.backward()
      let t1 = DispatchTime.now().uptimeNanoseconds
      try cluster.allreduceSum(gpt.gradients.buffer)
      let t2 = DispatchTime.now().uptimeNanoseconds
      clipGradientNorm(gpt.gradients, maxNorm: 1)
      opt.update(params: gpt.parameters, grads: gpt.gradients, lr: 1e-4)
      let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
      if i >= 2 { times.append(dt); reduce.append(Double(t2 - t1) / 1e6) }
    }
    guard cluster.isLeader else { return }
    let ms = median(times), r = median(reduce)
    let tokS = Double(BT * cluster.size) / (ms / 1000)
    print("preset \(model.presetName): \(c.parameterCount) parameters, \(cluster.size) MPI ranks × (B=\(model.batch) T=\(T), \(Parallel.threads) threads), \(model.precision.summary)")
    print(String(format: "median %.1f ms/step (min %.1f, max %.1f over %d steps), %.0f tokens/s over all ranks; all-reduce of %d gradients (%.1f MB) %.1f ms/step (%.1f%% of the step)",
                 ms, times.min()!, times.max()!, times.count, tokS, gpt.gradients.count, Double(gpt.gradients.count * 4) / 1e6, r, 100 * r / ms))
  }
}

extension Bench {
  struct ExportBench: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "export", abstract: "Write a model of a preset's shape as sharded safetensors and import it back: seconds each way, peak memory (one JSON line).")
    @Option(help: "Model preset (llama-1b: ~1.1B parameters, 4.4 GB).")
    var preset: String = "llama-1b"
    @Option(name: .customLong("max-shard-size"), help: "Largest shard (2GB, 500MB, or octets).")
    var maxShardSize: String = "2GB"
    @Flag(help: "Keep the directory.")
    var keep = false

    func run() throws {
      var b = ExportBenchmark()
      b.preset = preset
      b.shardBytes = try ExportCommand.octets(maxShardSize)
      b.keep = keep
      print(try b.run())
    }
  }
}
