@testable import AgoraModel
import AgoraTensor
import Testing

/// bf16 mixed precision (issue #18): the same weights and batch give the fp32 model's loss and gradients to
/// bf16's rounding, for both architectures, and the products really run in bf16.
@Suite struct MixedPrecisionTests {
  @Test(arguments: ["tiny", "llama-tiny", "small", "llama-small"])
  func bf16LossAndGradientsFollowFP32(preset: String) throws {
    var c = try GPTConfig.preset(preset)
    c.vocabSize = 300
    let B = 2, T = min(32, c.contextLength)
    let full = try GPT(config: c, batch: B, sequence: T, seed: 5)
    let mixed = try GPT(config: c, batch: B, sequence: T, seed: 5, precision: .bf16)
    #expect(mixed.precision == .bf16 && full.precision == .fp32)
    // Away from initialisation, so every tensor has a gradient of its own.
    var r = SplitMix64(seed: 2)
    for i in 0..<full.parameters.count { full.parameters[i] += Float(r.nextGaussian() * 0.02) }
    mixed.parameters.copy(from: full.parameters)
    let x = (0..<(B * T)).map { _ in Int32(r.next() % 300) }, y = (0..<(B * T)).map { _ in Int32(r.next() % 300) }
    var losses: [Float] = []
    for m in [full, mixed] {
      m.zeroGradients()
      losses.append(try m.forward(tokens: x, targets: y, backwardScale: 1 / Float(B * T))!)
      try m.backward()
    }
    #expect(abs(losses[1] - losses[0]) / losses[0] < 5e-3, "loss fp32 \(losses[0]), bf16 \(losses[1])")
    #expect(losses[1] != losses[0], "bf16 products round their inputs: the loss cannot be fp32's to the bit")
    var worst = 0.0
    for t in full.layout.tensors {
      var num = 0.0, den = 0.0
      for i in t.offset..<(t.offset + t.count) {
        let d = Double(mixed.gradients[i] - full.gradients[i])
        num += d * d
        den += Double(full.gradients[i]) * Double(full.gradients[i])
      }
      worst = max(worst, (num / max(den, 1e-30)).squareRoot())
    }
    #expect(worst < 3e-2, "\(preset): worst relative gradient error \(worst) (bf16 keeps 8 significant bits)")
  }
}
