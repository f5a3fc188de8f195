import AgoraTensor
import Foundation
import Testing
@testable import AgoraModel

/// The restricted softmax of a federated node's training loss (`GPT.restrictSoftmax(to:)`): the loss is the
/// cross-entropy over the allowed tokens only, the excluded tokens' output rows get no gradient from the head,
/// and lifting the restriction gives the ordinary loss back.
@Suite struct RestrictedSoftmaxTests {
  func model() throws -> (GPT, [Int32], [Int32], [Bool]) {
    var c = try GPTConfig.preset("tiny")
    c.vocabSize = 61
    c.contextLength = 8
    let model = try GPT(config: c, batch: 2, sequence: 8, seed: 3)
    var r = SplitMix64(seed: 11)
    for i in 0..<model.parameters.count { model.parameters[i] += Float(r.nextGaussian() * 0.05) }
    // Tokens 0..<30 are the node's; inputs and targets use only them.
    let allowed = (0..<61).map { $0 < 30 }
    let x = (0..<16).map { _ in Int32(r.next() % 30) }, y = (0..<16).map { _ in Int32(r.next() % 30) }
    return (model, x, y, allowed)
  }

  @Test func theLossIsTheCrossEntropyOverTheAllowedTokens() throws {
    let (m, x, y, allowed) = try model()
    _ = try m.forward(tokens: x, targets: nil)
    let logits = Array(m.logits)
    var expected = 0.0
    for i in 0..<16 {
      let row = logits[(i * 61)..<((i + 1) * 61)].enumerated().filter { allowed[$0.offset] }.map { Double($0.element) }
      let mx = row.max()!
      expected += log(row.map { exp($0 - mx) }.reduce(0, +)) + mx - Double(logits[i * 61 + Int(y[i])])
    }
    expected /= 16
    let full = Double(try m.forward(tokens: x, targets: y)!)
    m.restrictSoftmax(to: allowed)
    let restricted = Double(try m.forward(tokens: x, targets: y)!)
    #expect(abs(restricted - expected) < 1e-4, "restricted \(restricted), expected \(expected)")
    #expect(restricted < full, "fewer tokens to share the probability with: \(restricted) ≥ \(full)")
    m.restrictSoftmax(to: nil)
    #expect(abs(Double(try m.forward(tokens: x, targets: y)!) - full) < 1e-6, "lifting the restriction gives the ordinary loss")
  }

  @Test func excludedTokensGetNoGradient() throws {
    let (m, x, y, allowed) = try model()
    m.restrictSoftmax(to: allowed)
    m.zeroGradients()
    _ = try m.forward(tokens: x, targets: y, backwardScale: 1 / 16)
    try m.backward()
    let C = m.config.channels, wte = m.layout.wte
    var excluded = 0.0, kept = 0.0
    for t in 0..<61 {
      for k in 0..<C { let g = Double(abs(m.gradients[wte + t * C + k])); if allowed[t] { kept += g } else { excluded += g } }
    }
    // exp of a logit 30,000 below the others underflows (the vectorised exp saturates at a denormal, not 0).
    #expect(kept > 0 && excluded < kept * 1e-20, "excluded tokens' embedding rows got gradient \(excluded) (the others \(kept))")
  }
}
