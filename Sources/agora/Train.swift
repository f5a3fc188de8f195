import AgoraData
import AgoraModel
import AgoraTensor
import AgoraTrainer
import ArgumentParser
import Foundation

extension GPTConfig.Architecture: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}

/// Options shared by commands that train or measure a model.
struct ModelOptions: ParsableArguments {
  @Option(help: "Model preset: tiny, small, medium, bench-14m, gpt-100m, or a LLaMA preset (llama-tiny, llama-small, llama-medium, llama-14m, llama-100m).")
  var preset: String = "tiny"

  @Option(help: "Block design: gpt2, or llama (RMSNorm, rotary positions, SwiGLU, grouped-query attention); llama maps a GPT-2 preset name to its LLaMA preset.")
  var architecture: GPTConfig.Architecture = .gpt2

  @Option(help: "Matrix products: fp32, or bf16 (bf16 operands, fp32 accumulation and master weights; native on CPUs with AVX512_BF16, emulated and slower elsewhere).")
  var precision: Precision = .fp32

  /// The preset's name with the architecture applied (`small` with `--architecture llama` is `llama-small`).
  var presetName: String { GPTConfig.presetName(preset, architecture: architecture) }

  @Option(help: "Sequences per micro-batch (B).")
  var batch: Int = 8

  @Option(help: "Sequence length T (default: the preset's context length).")
  var sequence: Int?

  @Option(help: "Threads for the kernels (default: all cores).")
  var threads: Int?

  func apply() {
    if let threads { Parallel.threads = max(1, threads) }
  }
}

struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train a GPT on plain-text directories, one per language, and write a Hugging Face checkpoint.")

  @Option(parsing: .upToNextOption, help: "Data directories (default: the embedded demo corpus).")
  var data: [String] = [defaultDemoData]

  @OptionGroup var model: ModelOptions

  @Option(help: "Optimizer steps.")
  var steps: Int = 200

  @Option(help: "Micro-batches per optimizer step (gradient accumulation).")
  var accumulate: Int = 1

  @Option(help: "Peak learning rate (after warmup; cosine decay to a tenth of it).")
  var lr: Float = 1e-3

  @Option(help: "Warmup steps.")
  var warmup: Int = 20

  @Option(help: "Evaluate bits-per-byte every this many steps (0: only at the end).")
  var evalEvery: Int = 100

  @Option(help: "Validation windows per language for bits/byte (the same windows as a coordinator's model.eval_windows).")
  var evalWindows: Int = 16

  @Option(help: "Also checkpoint every this many steps (0: only at the end).")
  var checkpointEvery: Int = 0

  @Option(help: "Random seed (initialisation and batches).")
  var seed: UInt64 = 1337

  @Option(help: "tokenizer.json to use; without it one is learned from the data with the preset's vocabulary.")
  var tokenizer: String?

  @Option(help: "Output directory: model.safetensors, config.json, tokenizer.json, optimizer state.")
  var out: String = "runs/train"

  @Flag(help: "Continue the run saved in --out.")
  var resume = false

  @Option(parsing: .upToNextOption, help: "After training, also score the model on these languages' validation text (e.g. a federation's eval_data, to compare a model trained alone with a federated one on the same windows).")
  var evalData: [String] = []

  func validate() throws {
    guard steps >= 1, accumulate >= 1, model.batch >= 1 else { throw ValidationError("--steps, --accumulate and --batch must be positive") }
    guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be a positive number") }
  }

  func run() throws {
    model.apply()
    let sources = try LanguageSource.discover(data)
    let preset = try GPTConfig.preset(model.presetName)
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    let tok: Tokenizer
    let tokPath: String
    if let tokenizer {
      tok = try Tokenizer(contentsOf: tokenizer)
      tokPath = tokenizer
    } else if resume, FileManager.default.fileExists(atPath: out + "/tokenizer.json") {
      tokPath = out + "/tokenizer.json"
      tok = try Tokenizer(contentsOf: tokPath)
    } else {
      print("learning a \(preset.vocabSize)-token BPE vocabulary from \(sources.count) languages…")
      var bpe = BPETrainer()
      for s in sources {
        let h = FileHandle(forReadingAtPath: s.train)
        let d = h?.readData(ofLength: 2_000_000) ?? Data()
        let cut = d.lastIndex(of: 0x0A).map { d.prefix(upTo: $0 + 1) } ?? d
        bpe.addLanguage(s.name, texts: [String(decoding: cut, as: UTF8.self)])
      }
      tok = try bpe.train(vocabSize: preset.vocabSize)
      tokPath = out + "/tokenizer.json"
      try tok.save(to: tokPath)
    }
    print("tokenizing \(sources.count) languages (cached in \(out)/cache)…")
    let corpus = try TokenizedCorpus(sources: sources, tokenizer: tok, tokenizerPath: tokPath, cacheDir: out + "/cache") { print($0) }

    var s = TrainSettings()
    s.preset = model.presetName
    s.batch = model.batch
    s.sequence = model.sequence
    s.precision = model.precision
    s.gradAccumulation = accumulate
    s.steps = steps
    s.maxLR = lr
    s.minLR = lr / 10
    s.warmupSteps = min(warmup, steps)
    s.seed = seed
    s.evalEvery = evalEvery
    s.evalWindows = evalWindows
    s.checkpointEvery = checkpointEvery
    let trainer = try Trainer(settings: s, tokenizer: tok, corpus: corpus)
    if resume {
      try trainer.resume(from: out)
      print("resumed at step \(trainer.state.step)")
    }
    let c = trainer.model.config
    let heads = c.architecture == .llama ? "H=\(c.heads) KV=\(c.kvHeads) I=\(c.intermediate)" : "H=\(c.heads)"
    print("model: \(model.presetName), \(c.parameterCount) parameters (V=\(c.vocabSize) T=\(trainer.model.T) C=\(c.channels) L=\(c.layers) \(heads)), B=\(s.batch)×\(s.gradAccumulation), \(model.precision), \(Parallel.threads) threads")
    let unigram = trainer.evaluator.unigramBitsPerByte(T: trainer.model.T, vocabSize: c.vocabSize)
    print("unigram baseline bits/byte: " + format(unigram) + "  (mean \(String(format: "%.3f", mean(unigram))))")
    if trainer.state.step == 0 { print("step 0 bits/byte: " + format(try trainer.evaluate().bitsPerByte.sorted { $0.key < $1.key })) }
    let progress = ProgressLine()
    try trainer.run(checkpointDir: out, progress: { r in
      progress.update(String(format: "step %d/%d | loss %.4f | lr %.2e | norm %.2f | %.0f tok/s | ETA %@",
                             r.step, r.totalSteps, r.loss, r.lr, r.gradNorm, r.tokensPerSecond, duration(r.secondsLeft)),
                      final: r.step == r.totalSteps || r.step % 50 == 0)
    }, onEval: { e in
      let list = e.bitsPerByte.sorted { $0.key < $1.key }
      progress.finishLine()
      print("step \(e.step) bits/byte: " + format(list) + "  (mean \(String(format: "%.3f", mean(list))))")
    })
    print("checkpoint written to \(out) (model.safetensors, config.json, tokenizer.json, optimizer.safetensors)")
    if !evalData.isEmpty {
      let ec = try TokenizedCorpus(sources: try LanguageSource.discover(evalData), tokenizer: tok, tokenizerPath: tokPath, cacheDir: out + "/cache-eval")
      let list = try Evaluator(corpus: ec, tokenizer: tok, maxWindows: evalWindows).bitsPerByte(model: trainer.model).sorted { $0.0 < $1.0 }
      print("eval-data bits/byte: " + format(list) + "  (mean \(String(format: "%.3f", mean(list))))")
    }
  }
}

func format(_ list: [(String, Double)]) -> String {
  list.map { "\($0.0) \(String(format: "%.3f", $0.1))" }.joined(separator: ", ")
}

func mean(_ list: [(String, Double)]) -> Double { list.isEmpty ? .nan : list.map(\.1).reduce(0, +) / Double(list.count) }

func duration(_ s: Double) -> String {
  guard s.isFinite else { return "?" }
  let t = Int(s.rounded())
  return t >= 3600 ? "\(t / 3600)h\(String(format: "%02d", t / 60 % 60))m" : "\(t / 60)m\(String(format: "%02d", t % 60))s"
}

/// A live status line on a terminal (rewritten in place); on a pipe, only the lines marked final.
final class ProgressLine {
  let tty = isatty(STDOUT_FILENO) == 1
  var open = false

  func update(_ s: String, final: Bool) {
    if tty {
      FileHandle.standardOutput.write(("\r\u{1B}[K" + s).data(using: .utf8)!)
      open = true
    } else if final {
      print(s)
    }
  }

  func finishLine() {
    if open { FileHandle.standardOutput.write("\n".data(using: .utf8)!); open = false }
  }
}
