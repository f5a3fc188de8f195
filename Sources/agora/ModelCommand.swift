import AgoraImport
import AgoraModel
import AgoraTensor
import ArgumentParser
import Foundation

struct ModelCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "model", abstract: "Inspect model checkpoints and produce reference data for cross-checks.",
    subcommands: [Import.self, DumpReference.self, Check.self])

  struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Bring a Hugging Face checkpoint (GPT2LMHeadModel or LlamaForCausalLM) in as an Agora model directory.",
      discussion: """
        Reads config.json, model.safetensors (or a sharded model.safetensors.index.json) in fp32, fp16 or bf16, and
        tokenizer.json; refuses by name any config field, tensor or tokenizer part the trainer does not implement.
        Writes OUT (which must not exist) whole or not at all, with agora-base.json recording the checkpoint's
        hash and origin. Name OUT, or the checkpoint itself, as model.init in federation.toml to start a
        federation from it.
        """)
    @Argument(help: "The checkpoint's directory.")
    var dir: String
    @Option(help: "The Agora model directory to write.")
    var out: String

    func run() throws {
      let t0 = Date()
      let m: ImportedModel
      do { m = try HuggingFaceImport.run(dir, out: out) } catch { throw CLIError("\(error)") }
      let c = m.config
      print(String(format: "imported %@ in %.2f s: %@, %d layers, width %d, %d heads (%d key/value), vocabulary %d, context %d",
                   m.base.summary, Date().timeIntervalSince(t0), m.base.architecture, c.layers, c.channels, c.heads, c.kvHeads, c.vocabSize, c.contextLength))
      for n in m.base.notes { print("  note: \(n)") }
      print("wrote \(out)")
    }
  }

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
