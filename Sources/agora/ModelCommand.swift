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
      var c = try GPTConfig.preset(model.preset)
      if let vocab { c.vocabSize = vocab }
      let T = model.sequence ?? c.contextLength
      let gpt = try GPT(config: c, batch: model.batch, sequence: T, seed: 42)
      var rng = SplitMix64(seed: 7)
      func randomTokens() -> [Int32] { (0..<(model.batch * T)).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) } }
      let opt = AdamW(layout: gpt.layout)
      opt.settings.weightDecay = 0.1
      for _ in 0..<warmSteps {
        gpt.zeroGradients()
        try gpt.forward(tokens: randomTokens(), targets: randomTokens(), backwardScale: 1 / Float(model.batch * T))
        gpt.backward()
        opt.update(params: gpt.parameters, grads: gpt.gradients, lr: 1e-2)
      }
      let x = randomTokens(), y = randomTokens()
      try gpt.forward(tokens: x, targets: nil)
      let logits = Array(gpt.logits)
      gpt.zeroGradients()
      let loss = try gpt.forward(tokens: x, targets: y, backwardScale: 1 / Float(model.batch * T))!
      gpt.backward()
      try Checkpoint.saveModel(gpt, tokenizer: nil, to: out)
      var lossArr = [loss]
      var outs: [SafeTensors.Output] = []
      try x.withUnsafeBytes { xp in
        try y.withUnsafeBytes { yp in
          try logits.withUnsafeBytes { lp in
            try lossArr.withUnsafeMutableBytes { lossP in
              outs.append(.init(name: "tokens", dtype: .i32, shape: [model.batch, T], pointer: xp.baseAddress!))
              outs.append(.init(name: "targets", dtype: .i32, shape: [model.batch, T], pointer: yp.baseAddress!))
              outs.append(.init(name: "logits", shape: [model.batch, T, c.vocabSize], pointer: lp.baseAddress!))
              outs.append(.init(name: "loss", shape: [1], pointer: UnsafeRawPointer(lossP.baseAddress!)))
              for t in gpt.layout.tensors {
                outs.append(.init(name: "grad." + t.name, shape: t.shape, pointer: UnsafeRawPointer(gpt.gradients.pointer + t.offset)))
              }
              try SafeTensors.write(outs, to: (out as NSString).appendingPathComponent("reference.safetensors"))
            }
          }
        }
      }
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
        print("ok: \(m.config.parameterCount) parameters, vocabulary \(tok.vocabSize), context \(m.config.contextLength)")
      } catch {
        throw CLIError("\(error)")
      }
    }
  }
}
