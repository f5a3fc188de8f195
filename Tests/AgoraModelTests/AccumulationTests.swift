import Testing
@testable import AgoraModel

/// Gradient accumulation: two micro-batches of 4 give the gradients of one batch of 8 (every backward
/// function must add into the parameter gradients, never overwrite them).
@Suite struct AccumulationTests {
  @Test func twoHalfBatchesEqualOneFullBatch() throws {
    var c = try GPTConfig.preset("tiny")
    c.vocabSize = 97
    let T = 16
    let full = try GPT(config: c, batch: 8, sequence: T, seed: 5)
    let half = try GPT(config: c, batch: 4, sequence: T, seed: 5)
    #expect(full.parameters.array == half.parameters.array)
    var r = SplitMix64(seed: 1)
    let x = (0..<(8 * T)).map { _ in Int32(r.next() % 97) }, y = (0..<(8 * T)).map { _ in Int32(r.next() % 97) }
    full.zeroGradients()
    let lossFull = try full.forward(tokens: x, targets: y, backwardScale: 1 / Float(8 * T))!
    try full.backward()
    half.zeroGradients()
    var lossHalf: Float = 0
    for m in 0..<2 {
      let s = m * 4 * T, e = s + 4 * T
      lossHalf += try half.forward(tokens: Array(x[s..<e]), targets: Array(y[s..<e]), backwardScale: 1 / Float(8 * T))! / 2
      try half.backward()
    }
    #expect(abs(lossFull - lossHalf) < 1e-5)
    var worst: Float = 0, norm: Float = 0
    for i in 0..<full.gradients.count {
      worst = max(worst, abs(full.gradients[i] - half.gradients[i]))
      norm = max(norm, abs(full.gradients[i]))
    }
    #expect(worst <= 1e-4 * norm, "max difference \(worst) against max gradient \(norm)")
  }
}
