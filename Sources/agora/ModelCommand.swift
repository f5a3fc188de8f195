import AgoraModel
import AgoraTensor
import ArgumentParser
import Foundation

struct ModelCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "model", abstract: "Inspect model checkpoints and produce reference data for cross-checks.",
    subcommands: [DumpReference.self, Check.self])

  struct DumpReference: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "dump-reference",
      abstract: "Write a model directory plus reference.safetensors (tokens, targets, logits, loss, every gradient).")

    @OptionGroup var model: ModelOptions

    @Option(help: "Vocabulary size (default: the preset's).")
    var vocab: Int?

    @Option(help: "AdamW steps on random tokens before the dump, so weights are not at initialisation.")
    var warmSteps: Int = 3

    @Option(help: "Output directory.")
    var out: String

    func run() throws {
      model.apply()
      var c = try GPTConfig.preset(model.presetName)
      if let vocab { c.vocabSize = vocab }
      let T = model.sequence ?? c.contextLength
      let loss = try ReferenceDump.write(config: c, batch: model.batch, sequence: T, warmSteps: warmSteps, to: out)
      print("wrote \(out): \(c.parameterCount) parameters, loss \(loss)")
    }
  }

  struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Load a model directory and report what is in it, or what is wrong.")

    @Argument(help: "Model directory (config.json, model.safetensors, tokenizer.json).")
    var dir: String

    func run() throws {
      do {
        let (m, tok) = try Checkpoint.load(dir: dir, batch: 1, sequence: 1)
        let c = m.config, kind = c.architecture == .llama ? "LLaMA (\(c.heads) query / \(c.kvHeads) key-value heads)" : "GPT-2"
        print("ok: \(kind), \(c.parameterCount) parameters, vocabulary \(tok.vocabSize), context \(c.contextLength)")
      } catch {
        throw CLIError("\(error)")
      }
    }
  }
}
