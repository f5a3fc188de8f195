import AgoraBench
import AgoraImport
import AgoraModel
import AgoraRounds
import AgoraTensor
import ArgumentParser
import Foundation

extension Bench {
  struct LoRABench: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "lora",
      abstract: "Time fine-tuning steps on a model directory: LoRA adapters on the frozen base, or full fine-tuning (one JSON line).",
      discussion: "Random tokens and targets; a step is forward, backward, clipping and AdamW. scripts/bench-peers lora runs it beside peft + transformers.")

    @Option(help: "Model directory (any checkpoint agora model import accepts; .agora/bench/PRESET is made by agora bench generate).")
    var model: String
    @Option(help: "lora or full.")
    var method: String = "lora"
    @Option(help: "LoRA rank.")
    var rank: Int = 16
    @Option(help: "LoRA alpha.")
    var alpha: Float = 32
    @Option(help: "Rows per step (B).")
    var batch: Int = 8
    @Option(help: "Row length (T).")
    var sequence: Int = 512
    @Option(help: "Timed steps (after one warm-up step).")
    var steps: Int = 3
    @Option(help: "Threads (default: all cores).")
    var threads: Int?
    @Option(help: "Matrix products: fp32 or bf16.")
    var precision: Precision = .fp32

    func run() throws {
      if let threads { Parallel.threads = max(1, threads) }
      guard method == "lora" || method == "full" else { throw CLIError("--method is lora or full") }
      let m: ImportedModel
      do { m = try HuggingFaceImport.read(model) } catch { throw CLIError("\(error)") }
      let lora = method == "lora"
      let gpt = try GPT(config: m.config, batch: batch, sequence: sequence, seed: 1, precision: precision, baseGradients: !lora)
      gpt.parameters.copy(from: m.parameters)
      let (params, grads, opt): (FloatBuffer, FloatBuffer, AdamW)
      if lora {
        let a = try gpt.attach(lora: LoRASettings(rank: rank, alpha: alpha, targets: LoRASettings.defaultTargets(for: m.config.architecture)))
        (params, grads, opt) = (a.parameters, a.gradients, AdamW(tensors: a.layout.tensors, count: a.layout.count))
      } else {
        (params, grads, opt) = (gpt.parameters, gpt.gradients, AdamW(layout: gpt.layout))
      }
      var rng = SplitMix64(seed: 3)
      let BT = batch * sequence, V = UInt64(m.config.vocabSize)
      var times: [Double] = []
      for i in 0..<(steps + 1) {
        let x = (0..<BT).map { _ in Int32(rng.next() % V) }, y = (0..<BT).map { _ in Int32(rng.next() % V) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        gpt.zeroGradients()
        try gpt.forward(tokens: x, targets: y, backwardScale: 1 / Float(BT))
        try gpt.backward()
        clipGradientNorm(grads, maxNorm: 1)
        opt.update(params: params, grads: grads, lr: 1e-4)
        if i >= 1 { times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
      }
      let s = median(times)
      let bytes = try Self.roundBytes(m.config, rank: rank, alpha: alpha)
      print("{\"method\":\"\(method)\",\"precision\":\"\(precision.summary)\",\"rank\":\(lora ? rank : 0),\"B\":\(batch),\"T\":\(sequence),\"threads\":\(Parallel.threads),\"trained\":\(params.count),\"seconds_per_step\":\(s),\"tokens_per_s\":\(Double(BT) / s),\"peak_rss_mib\":\(peakRSSMiB()),"
            + "\"federation_adapter_values\":\(bytes.adapter),\"federation_update_bytes_int4\":\(bytes.update),\"full_update_bytes_int4\":\(bytes.full)}")
    }

    /// What a node of a fine-tuning federation sends each round on this model with the federation's recommended
    /// adapter (`FineTuneTerms.defaultTargets`, rank r, ChatML's two tokens' rows), as an int4 AGDQ payload,
    /// beside a whole model's int4 update (without the moments trailer, which both would add in proportion).
    static func roundBytes(_ c: GPTConfig, rank: Int, alpha: Float) throws -> (adapter: Int, update: Int, full: Int) {
      var grown = c
      grown.vocabSize = c.vocabSize + 2
      let l = try LoRALayout(grown, settings: LoRASettings(rank: rank, alpha: alpha, targets: FineTuneTerms.defaultTargets(for: c.architecture),
                                                           tokens: [c.vocabSize, c.vocabSize + 1]))
      return (l.count, DeltaCodec.encodedSize(count: l.count, format: .int4), DeltaCodec.encodedSize(count: ParameterLayout(grown).count, format: .int4))
    }
  }
}
