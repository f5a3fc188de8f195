import AgoraImport
@testable import AgoraModel
import AgoraTensor
import AgoraTestSupport
import AgoraFineTune
import Foundation
import Testing

/// LoRA against peft + transformers (issue #34): the same base (a transformers checkpoint with random weights,
/// imported), the same adapters (peft's, drawn at random and saved with `save_pretrained`, read by Agora) and
/// the same batch (some targets ignored, as in answer-only training) give the same loss and the same gradient
/// of every adapter matrix within 1e-5. Needs the Python environment (scripts/setup --python).
@Suite(.serialized) struct LoRAParityTests {
  static let script = repoRoot + "/scripts/hf_lora.py"

  static func lora(_ args: [String]) throws -> [String: Any] {
    let (status, out) = try runProcess(ImportParityTests.python, [script] + args)
    guard status == 0, let line = out.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
          let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
      throw ModelError.mismatch("scripts/hf_lora.py \(args.first ?? "") failed (\(status)):\n\(out)")
    }
    return o
  }

  /// (architecture, target modules, tokens whose embedding and head rows train too)
  static let cases: [(String, [String], [Int])] = [
    ("gpt2", ["c_attn", "c_proj", "c_fc"], []),
    ("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], []),
    ("llama", ["v_proj", "up_proj"], []),
    ("gpt2", ["c_attn"], [3, 17]),
    ("llama", ["q_proj", "down_proj"], [5, 9, 30]),
  ]

  @Test(arguments: cases.indices)
  func lossAndAdapterGradientsEqualPeft(_ which: Int) throws {
    let (kind, targets, trainTokens) = Self.cases[which]
    let (hf, cleanup) = try ImportParityTests.checkpoint(kind)
    defer { cleanup() }
    let root = (hf as NSString).deletingLastPathComponent
    let imported = try HuggingFaceImport.run(hf, out: root + "/agora")
    let (B, T) = (2, 24)
    var rng = SplitMix64(seed: UInt64(40 + which))
    let V = imported.config.vocabSize
    var tokens = (0..<(B * T)).map { _ in Int32(rng.next() % UInt64(V)) }
    for (i, t) in trainTokens.enumerated() { tokens[3 + 7 * i] = Int32(t) }  // their embedding rows get gradients
    let labels = (0..<(B * T)).map { i in i % 5 < 2 ? GPT.ignoredTarget : Int32(rng.next() % UInt64(V)) }
    let want = try Self.lora(["grads", hf, root + "/peft", "--targets", targets.joined(separator: ","), "--rank", "4", "--alpha", "12",
                              "--tokens", tokens.map(String.init).joined(separator: ","),
                              "--labels=" + labels.map(String.init).joined(separator: ","), "--batch", String(B)]
                             + (trainTokens.isEmpty ? [] : ["--train-tokens", trainTokens.map(String.init).joined(separator: ",")]))
    let rowTensors = trainTokens.isEmpty ? 0 : kind == "llama" ? 2 : 1
    #expect(want["trained"] as? Int == 2 * targets.count * imported.config.layers + (targets.contains("c_proj") ? 2 * imported.config.layers : 0) + rowTensors)

    let model = try GPT(config: imported.config, batch: B, sequence: T, baseGradients: false)
    try Checkpoint.loadWeights(into: model, from: root + "/agora")
    let settings = try LoRACheckpoint.readSettings(root + "/peft/adapter", architecture: imported.config.architecture)
    #expect(settings == LoRASettings(rank: 4, alpha: 12, dropout: 0, targets: targets, tokens: trainTokens))
    let adapters = try model.attach(lora: settings)
    try LoRACheckpoint.loadWeights(into: adapters, from: root + "/peft/adapter")
    let counted = labels.filter { $0 != GPT.ignoredTarget }.count
    model.zeroGradients()
    let loss = try model.forward(tokens: tokens, targets: labels, backwardScale: 1 / Float(counted))!
    try model.backward()

    let ref = try SafeTensors(path: root + "/peft/grads.safetensors")
    let refLoss = try ref.floats("loss", shape: [1])[0]
    #expect(abs(loss - refLoss) <= 1e-5, "loss \(loss) vs peft's \(refLoss)")
    var worst: Float = 0, largest: Float = 0, worstName = ""
    for t in adapters.layout.tensors {
      let g = try ref.floats(t.name, shape: t.shape)
      for i in 0..<t.count {
        let d = abs(adapters.gradients[t.offset + i] - g[i])
        largest = max(largest, abs(g[i]))
        if d > worst { (worst, worstName) = (d, t.name) }
      }
    }
    #expect(largest > 1e-3, "peft's gradients are not all near zero (\(largest))")
    #expect(worst <= 1e-5, "adapter gradients differ from peft's by \(worst) (\(worstName)); largest gradient \(largest)")
  }
}
