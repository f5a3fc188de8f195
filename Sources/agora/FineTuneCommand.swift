import AgoraBench
import AgoraData
import AgoraImport
import AgoraModel
import AgoraTensor
import AgoraTrainer
import ArgumentParser
import AgoraFineTune
import Foundation

extension ChatTemplate: ExpressibleByArgument {}
extension FineTuneSettings.Method: ExpressibleByArgument {}

struct FineTuneCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "finetune",
    abstract: "Instruction-tune a model on chat data (JSONL conversations), loss on the answers only: LoRA or full.",
    discussion: """
      --data directories hold train.jsonl (and valid.jsonl) per language, one {"messages": [...]} per line, as
      Hugging Face datasets and TRL write them. Lines that cannot be trained on are reported by line number and
      skipped. Writes OUT/merged (a Hugging Face model with the chat template in tokenizer_config.json),
      OUT/adapter (peft's adapter directory; LoRA) and OUT/finetune_state.json, and prints answer-token
      bits/byte per language before and after.
      """)

  @Option(help: "The base model directory (any GPT-2/LLaMA checkpoint agora model import accepts).")
  var base: String
  @Option(parsing: .upToNextOption, help: "Chat data directories (train.jsonl, valid.jsonl; or one subdirectory per language).")
  var data: [String]
  @Option(help: "Chat template: chatml or llama3 (its special tokens are added to the vocabulary if missing).")
  var template: ChatTemplate = .chatml
  @Option(help: "lora (adapters on a frozen base) or full (every parameter).")
  var method: FineTuneSettings.Method = .lora
  @Option(help: "LoRA rank r.")
  var rank: Int = 16
  @Option(help: "LoRA alpha (scaling alpha / r).")
  var alpha: Float = 32
  @Option(help: "LoRA dropout on the adapters' inputs.")
  var dropout: Float = 0
  @Option(help: "LoRA target modules by Hugging Face name, comma-separated (default: every linear layer of the blocks).")
  var targets: String?
  @Option(help: "Optimizer steps.")
  var steps: Int = 100
  @Option(help: "Peak learning rate (after warmup; cosine decay to a tenth of it).")
  var lr: Float = 1e-3
  @Option(help: "Warmup steps.")
  var warmup: Int = 10
  @Option(help: "Rows per step (B).")
  var batch: Int = 8
  @Option(help: "Row length T (default: the model's context).")
  var sequence: Int?
  @Option(help: "Random seed (adapters and batches).")
  var seed: UInt64 = 1337
  @Option(help: "Matrix products: fp32 or bf16.")
  var precision: Precision = .fp32
  @Option(help: "Threads for the kernels (default: all cores).")
  var threads: Int?
  @Option(help: "Output directory.")
  var out: String = "runs/finetune"
  @Option(help: ArgumentHelp("Languages' shares of the rows, as LANG=WEIGHT,… (default: equal).", valueName: "mixture"))
  var mixture: String?

  func run() throws {
    if let threads { Parallel.threads = max(1, threads) }
    do {
      let m = try HuggingFaceImport.read(base)
      let chatBase = try ChatBase(config: m.config, parameters: m.parameters, tokenizer: m.tokenizer, template: template)
      if !chatBase.newTokens.isEmpty {
        print("finetune: \(template.rawValue)'s tokens added to the vocabulary as ids \(chatBase.newTokens) (their rows train)")
      }
      var s = FineTuneSettings()
      s.method = method
      s.template = template
      s.steps = steps
      s.maxLR = lr
      s.minLR = lr / 10
      s.warmupSteps = warmup
      s.batch = batch
      s.sequence = sequence
      s.seed = seed
      s.precision = precision
      for part in (mixture ?? "").split(separator: ",") {
        let kv = part.split(separator: "=")
        guard kv.count == 2, let w = Double(kv[1]), w >= 0, w.isFinite else { throw CLIError("--mixture: \(part) is not LANG=WEIGHT") }
        s.mixture[String(kv[0]).trimmingCharacters(in: .whitespaces)] = w
      }
      if method == .lora {
        let t = targets.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } } ?? LoRASettings.defaultTargets(for: m.config.architecture)
        s.lora = LoRASettings(rank: rank, alpha: alpha, dropout: dropout, targets: t, tokens: chatBase.newTokens)
      }
      let T = sequence ?? chatBase.config.contextLength
      let corpus = try ChatCorpus(dirs: data, tokenizer: chatBase.tokenizer, template: template, maxTokens: T) { print("data: \($0)") }
      for l in s.mixture.keys where !corpus.languages.contains(l) { throw CLIError("--mixture names \(l), which --data does not hold") }
      let tuner = try FineTuner(settings: s, base: chatBase, corpus: corpus)
      if let a = tuner.adapters {
        print("finetune: LoRA r=\(a.layout.settings.rank) α=\(a.layout.settings.alpha) on \(a.layout.modules.count) modules: \(a.layout.count) trained values (\(String(format: "%.2f", 100 * Double(a.layout.count) / Double(tuner.model.layout.count)))% of \(tuner.model.layout.count))")
      }
      func show(_ label: String, _ r: EvalRecord) {
        for lang in corpus.languages { if let b = r.bitsPerByte[lang] { print(String(format: "\(label) \(lang): %.4f answer bits/byte", b)) } }
      }
      show("before", try tuner.evaluate())
      let start = Date()
      while tuner.state.step < steps {
        let (loss, norm, rate) = try tuner.step()
        if tuner.state.step % max(1, steps / 10) == 0 || tuner.state.step == steps {
          print(String(format: "step %d/%d loss %.4f norm %.3f lr %.2e", tuner.state.step, steps, loss, norm, rate))
        }
      }
      let seconds = Date().timeIntervalSince(start)
      show("after", try tuner.evaluate())
      try tuner.save(to: out, baseName: m.base.nameOrPath ?? m.base.hash, bosTokenID: m.bosTokenID)
      print(String(format: "finetune: %d steps in %.1f s; peak RSS %.0f MiB; wrote %@/merged%@", steps, seconds, peakRSSMiB(), out,
                   tuner.adapters == nil ? "" : " and \(out)/adapter"))
    } catch let e as CLIError { throw e } catch { throw CLIError("\(error)") }
  }
}
