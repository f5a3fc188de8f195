import Foundation

/// Reference data for cross-checks against an independent implementation (scripts/parity.py):
/// a model directory plus `reference.safetensors` holding a fixed batch (tokens, targets), the logits, the
/// loss and every parameter's gradient.
public enum ReferenceDump {
  /// Builds a model of `config` (seed 42), moves it away from its initialisation with `warmSteps` AdamW steps
  /// on random tokens, then writes the model and the reference of one more batch to `dir`. Returns the loss.
  @discardableResult
  public static func write(config c: GPTConfig, batch B: Int, sequence T: Int, warmSteps: Int = 3, to dir: String) throws -> Float {
    let gpt = try GPT(config: c, batch: B, sequence: T, seed: 42)
    var rng = SplitMix64(seed: 9)
    func tokens() -> [Int32] { (0..<(B * T)).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) } }
    let opt = AdamW(layout: gpt.layout)
    for _ in 0..<warmSteps {
      gpt.zeroGradients()
      try gpt.forward(tokens: tokens(), targets: tokens(), backwardScale: 1 / Float(B * T))
      try gpt.backward()
      opt.update(params: gpt.parameters, grads: gpt.gradients, lr: 1e-2)
    }
    let x = tokens(), y = tokens()
    try gpt.forward(tokens: x, targets: nil)
    let logits = Array(gpt.logits)
    gpt.zeroGradients()
    let loss = try gpt.forward(tokens: x, targets: y, backwardScale: 1 / Float(B * T))!
    try gpt.backward()
    try Checkpoint.saveModel(gpt, tokenizer: nil, to: dir)
    var lossArr = [loss]
    try x.withUnsafeBytes { xp in
      try y.withUnsafeBytes { yp in
        try logits.withUnsafeBytes { lp in
          try lossArr.withUnsafeMutableBytes { lossP in
            var outs: [SafeTensors.Output] = [
              .init(name: "tokens", dtype: .i32, shape: [B, T], pointer: xp.baseAddress!),
              .init(name: "targets", dtype: .i32, shape: [B, T], pointer: yp.baseAddress!),
              .init(name: "logits", shape: [B, T, c.vocabSize], pointer: lp.baseAddress!),
              .init(name: "loss", shape: [1], pointer: UnsafeRawPointer(lossP.baseAddress!)),
            ]
            for t in gpt.layout.tensors {
              outs.append(.init(name: "grad." + t.name, shape: t.shape, pointer: UnsafeRawPointer(gpt.gradients.pointer + t.offset)))
            }
            try SafeTensors.write(outs, to: (dir as NSString).appendingPathComponent("reference.safetensors"))
          }
        }
      }
    }
    return loss
  }
}
