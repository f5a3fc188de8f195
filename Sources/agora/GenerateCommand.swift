import AgoraBench
import AgoraCoordinator
import AgoraGeneration
import AgoraImport
import AgoraModel
import AgoraTensor
import AgoraRegistry
import AgoraRounds
import AgoraText
import AgoraTrainer
import ArgumentParser
import AgoraFineTune
import Foundation

struct GenerateCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "generate",
    abstract: "Generate text from a model directory or a version of the federation (streamed as it comes).",
    discussion: """
      Greedy decoding is --temperature 0. Without --json the text streams to the terminal; with it, one JSON
      object is printed at the end (tokens, text, finish_reason, prefill_ms, decode_tokens_per_s, peak_rss_mib).
      --prompts FILE reads one prompt per line (a line that is a JSON string, or an object with "prompt", is
      decoded; any other line is the prompt as it stands) and generates them in batches.
      --chat makes each prompt a user's message, rendered with the model's chat template (tokenizer_config.json's
      chat_template, or --template) and the assistant's header after it; generation ends at the end of the turn.
      --adapter DIR applies a peft LoRA adapter directory to --model (as PeftModel.from_pretrained does).
      """)

  @Option(help: "Model directory (config.json, model.safetensors, tokenizer.json): an export, an import, or any GPT-2/LLaMA checkpoint agora model import accepts.")
  var model: String?
  @Option(help: "A version of the federation (with --config; without --model and --version: the latest).")
  var version: Int?
  @Option(help: "coordinator.toml of the federation whose version --version names.")
  var config: String = "Nodes/demo/coordinator.toml"
  @Option(help: "The prompt.")
  var prompt: String?
  @Option(help: "A file of prompts, one per line.")
  var prompts: String?
  @Option(help: "Prompts decoded together (with --prompts).")
  var batch: Int = 8
  @Option(help: "New tokens at most.")
  var maxNewTokens: Int = 128
  @Option(help: "Sampling temperature (0: greedy).")
  var temperature: Double = SamplingSettings().temperature
  @Option(help: "Nucleus sampling: keep the most likely tokens whose probabilities reach this.")
  var topP: Double = SamplingSettings().topP
  @Option(help: "Keep the k most likely tokens (0: all).")
  var topK: Int = SamplingSettings().topK
  @Option(help: "Penalty on tokens already in the sequence (1: none).")
  var repetitionPenalty: Double = SamplingSettings().repetitionPenalty
  @Option(help: "Seed of the sampler (the same seed gives the same text).")
  var seed: UInt64 = 0
  @Option(help: "Stop when the text contains this (repeatable).")
  var stop: [String] = []
  @Flag(help: "Print one JSON object at the end instead of streaming.")
  var json = false
  @Flag(help: "Chat: each prompt is a user's message, rendered with the chat template.")
  var chat = false
  @Option(help: "Chat: a system message before each prompt.")
  var system: String?
  @Option(help: "Chat template (chatml, llama3) when the model names none.")
  var template: ChatTemplate?
  @Option(help: "A peft LoRA adapter directory (adapter_config.json, adapter_model.safetensors) to apply to --model.")
  var adapter: String?

  /// The template for --chat: --template, else the model directory's own, else (a version) its fine-tuning
  /// federation's.
  func chatTemplate(modelDir: String?) throws -> ChatTemplate {
    if let template { return template }
    if let dir = modelDir, let t = try ChatTemplate.read(configAt: (dir as NSString).appendingPathComponent(Checkpoint.tokenizerConfigFile)) { return t }
    if modelDir == nil, let t = try Self.versionTemplate(config: config, version: version) { return t }
    throw CLIError("--chat: the model names no chat template (tokenizer_config.json has no chat_template, nor is the federation a fine-tuning one); give --template")
  }

  /// The chat template of a fine-tuning federation's version `version` (nil: the latest), or nil.
  static func versionTemplate(config: String, version: Int?) throws -> ChatTemplate? {
    var registry = RegistryOptions()
    registry.config = config
    let (store, _) = try registry.open()
    guard let n = try version ?? store.latestVersion()?.number else { return nil }
    return try VersionExport.baseModel(of: n, in: store)?.fineTune.flatMap(FineTuneTerms.template(ofLine:))
  }

  /// A generator over version `version` (nil: the latest) of the federation whose coordinator.toml is `config`.
  /// `endOfTurn`: a chat template's end-of-turn token, where generation also ends.
  static func versionGenerator(config: String, version: Int?, slots: Int, endOfTurn: String? = nil) throws -> (Generator, Int) {
    var registry = RegistryOptions()
    registry.config = config
    let (store, _) = try registry.open()
    guard let n = try version ?? store.latestVersion()?.number else { throw CLIError("the registry holds no version") }
    let (c, params, tok) = try VersionExport.load(n, from: store)
    return (try Generator(config: c, parameters: params, tokenizer: tok, slots: slots, endTokens: endTokens(tok, endOfTurn)), n)
  }

  /// The id of `endOfTurn` in `tokenizer`, if it has one, as the generator's extra end token.
  static func endTokens(_ tokenizer: Tokenizer, _ endOfTurn: String?) -> Set<Int32> {
    endOfTurn.flatMap { tokenizer.addedTokenID($0) }.map { [$0] } ?? []
  }

  func readPrompts() throws -> [String] {
    switch (prompt, prompts) {
    case (let p?, nil): return [p]
    case (nil, let f?):
      guard let s = try? String(contentsOfFile: f, encoding: .utf8) else { throw CLIError("\(f): cannot read the prompts file") }
      let lines = s.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
      guard !lines.isEmpty else { throw CLIError("\(f): no prompts") }
      return lines.map { line in
        if let o = try? JSONSerialization.jsonObject(with: Data(line.utf8), options: .fragmentsAllowed) {
          if let s = o as? String { return s }
          if let d = o as? [String: Any], let s = d["prompt"] as? String { return s }
        }
        return line
      }
    default: throw CLIError("give --prompt TEXT or --prompts FILE (one of them)")
    }
  }

  func run() throws {
    let texts = try readPrompts()
    guard batch >= 1 else { throw CLIError("--batch must be at least 1") }
    let slots = min(batch, texts.count)
    let template = chat ? try chatTemplate(modelDir: model) : nil
    let gen: Generator
    do {
      switch (model, version) {
      case (let dir?, nil):
        // Read as an import reads it: any GPT2LMHeadModel/LlamaForCausalLM directory (sharded, fp16/bf16, tied).
        let m = try HuggingFaceImport.read(dir)
        var (config, parameters, tokenizer) = (m.config, m.parameters, m.tokenizer)
        if let adapter {
          (config, parameters, tokenizer) = try Self.applying(adapter: adapter, config: config, parameters: parameters, tokenizer: tokenizer,
                                                             template: template)
        }
        gen = try Generator(config: config, parameters: parameters, tokenizer: tokenizer, slots: slots,
                            endTokens: Self.endTokens(tokenizer, template?.endOfTurn))
      case (nil, let n):
        if adapter != nil { throw CLIError("--adapter applies to --model DIR") }
        gen = try Self.versionGenerator(config: config, version: n, slots: slots, endOfTurn: template?.endOfTurn).0
      default: throw CLIError("give --model DIR or --version N (with --config), not both")
      }
    } catch let e as CLIError { throw e } catch { throw CLIError("\(error)") }
    var s = GenerationSettings()
    s.maxNewTokens = maxNewTokens
    s.stop = stop
    s.sampling.temperature = temperature
    s.sampling.topP = topP
    s.sampling.topK = topK
    s.sampling.repetitionPenalty = repetitionPenalty
    s.sampling.seed = seed
    var all: [Completion] = []
    var prefill = 0.0, decodeSeconds = 0.0, decodeTokens = 0
    let single = texts.count == 1
    var prompts: [[Int32]]
    if let t = template {
      prompts = try texts.map { text in
        try gen.tokenizer.render((system.map { [ChatMessage(.system, $0)] } ?? []) + [ChatMessage(.user, text)], template: t, addGenerationPrompt: true).ids
      }
    } else {
      prompts = texts.map { gen.tokenizer.encodePrompt($0) }
    }
    for start in stride(from: 0, to: texts.count, by: slots) {
      let part = Array(texts[start..<min(texts.count, start + slots)])
      let ids = Array(prompts[start..<min(texts.count, start + slots)])
      let stream: ((Int, String) -> Void)? = json || !single ? nil : { _, piece in
        FileHandle.standardOutput.write(Data(piece.utf8))
      }
      if stream != nil { FileHandle.standardOutput.write(Data((chat ? "> \(part[0])\n" : part[0]).utf8)) }
      let (done, t): ([Completion], GenerationTimings)
      do { (done, t) = try gen.generate(ids, s, onText: stream) } catch { throw CLIError("\(error)") }
      all += done
      prefill += t.prefillSeconds
      decodeSeconds += t.decodeSeconds
      decodeTokens += t.decodeTokens
      if stream != nil { print("") }
      if !json && !single {
        for (k, c) in done.enumerated() { print("[\(start + k)] \(part[k])\(c.text)\n") }
      }
    }
    if json {
      func object(_ c: Completion) -> String {
        "\"tokens\": [\(c.tokens.map(String.init).joined(separator: ", "))], \"text\": \(jsonString(c.text)), \"finish_reason\": \"\(c.finishReason.rawValue)\", \"prompt_tokens\": \(c.promptTokens)"
      }
      let rate = decodeSeconds > 0 ? Double(decodeTokens) / decodeSeconds : 0
      let timing = String(format: "\"prefill_ms\": %.3f, \"decode_tokens_per_s\": %.2f, \"peak_rss_mib\": %.1f", prefill * 1000, rate, peakRSSMiB())
      if single {
        print("{\(object(all[0])), \(timing)}")
      } else {
        print("{\"completions\": [\(all.map { "{\(object($0))}" }.joined(separator: ", "))], \(timing)}")
      }
    }
  }

  /// The base with a peft adapter merged in: its settings and weights read and checked, the vocabulary grown
  /// first when the adapter trains rows of tokens the base lacks (a chat template's, given `template`).
  static func applying(adapter: String, config: GPTConfig, parameters: FloatBuffer, tokenizer: Tokenizer,
                       template: ChatTemplate?) throws -> (GPTConfig, FloatBuffer, Tokenizer) {
    var (c, p, tok) = (config, parameters, tokenizer)
    let settings = try LoRACheckpoint.readSettings(adapter, architecture: c.architecture)
    if let high = settings.tokens.max(), high >= c.vocabSize {
      guard let template else { throw CLIError("\(adapter) trains token \(high), beyond the model's vocabulary of \(c.vocabSize): give --chat (and --template) so the template's tokens are added") }
      let base = try ChatBase(config: c, parameters: p, tokenizer: tok, template: template)
      (c, p, tok) = (base.config, base.parameters, base.tokenizer)
    }
    let adapters = LoRAAdapters(layout: try LoRALayout(c, settings: settings), rows: 1)
    try LoRACheckpoint.loadWeights(into: adapters, from: adapter)
    adapters.merge(into: p)
    return (c, p, tok)
  }
}
