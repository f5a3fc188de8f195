import AgoraModel
import Foundation

/// How the next token is chosen, in the order transformers' `generate` applies its logits processors:
/// repetition penalty, then temperature, top-k and top-p, then a draw (or the arg-max at temperature 0).
public struct SamplingSettings: Sendable, Equatable {
  /// 0: greedy (the most likely token; ties go to the lowest id, as `torch.argmax`).
  public var temperature: Double = 0.7
  /// Keep the smallest set of tokens whose probabilities sum to at least this (1: all).
  public var topP: Double = 0.9
  /// Keep the k most likely tokens (0: all).
  public var topK: Int = 0
  /// > 1 makes tokens already in the sequence (prompt and generated) less likely: a positive logit is divided
  /// by it, a negative one multiplied (CTRL's penalty, as transformers applies it).
  public var repetitionPenalty: Double = 1
  public var seed: UInt64 = 0

  public init() {}

  public static var greedy: SamplingSettings {
    var s = SamplingSettings()
    s.temperature = 0
    s.topP = 1
    s.repetitionPenalty = 1
    return s
  }

  public func validate() throws {
    guard temperature.isFinite, temperature >= 0, temperature <= 100 else { throw GenerationError.badSetting("temperature \(temperature) must be in 0...100") }
    guard topP.isFinite, topP > 0, topP <= 1 else { throw GenerationError.badSetting("top-p \(topP) must be in (0, 1]") }
    guard topK >= 0 else { throw GenerationError.badSetting("top-k \(topK) must be ≥ 0") }
    guard repetitionPenalty.isFinite, repetitionPenalty > 0, repetitionPenalty <= 100 else {
      throw GenerationError.badSetting("repetition penalty \(repetitionPenalty) must be in (0, 100]")
    }
  }
}

/// Chooses tokens from logits; one per sequence (its own random stream, derived from the seed and the
/// sequence's index, so a batch samples each prompt as it would alone).
public struct Sampler {
  public let settings: SamplingSettings
  var rng: SplitMix64

  public init(_ settings: SamplingSettings, stream: UInt64 = 0) {
    self.settings = settings
    rng = SplitMix64.derived(settings.seed, stream)
  }

  /// The next token after `logits` for a sequence whose tokens so far are `history`.
  public mutating func next(_ logits: [Float], history: [Int32]) throws -> Int32 {
    var z = logits
    for (i, v) in z.enumerated() where !v.isFinite && v != -.infinity { throw GenerationError.nonFinite("logit \(i) is \(v)") }
    let s = settings
    if s.repetitionPenalty != 1 {
      let r = Float(s.repetitionPenalty)
      for t in Set(history) where t >= 0 && Int(t) < z.count { z[Int(t)] = z[Int(t)] < 0 ? z[Int(t)] * r : z[Int(t)] / r }
    }
    if s.temperature == 0 {
      var best = 0
      for i in 1..<z.count where z[i] > z[best] { best = i }
      return Int32(best)
    }
    // Candidates by falling logit (ties: lower id first), cut by top-k, then by top-p on the tempered softmax.
    let t = Float(s.temperature), top = z.max()!
    // Tokens more than e^25 times less likely than the best cannot matter to a draw in binary64; leaving them out
    // keeps the sort to the few that can.
    var order = z.indices.filter { (z[$0] - top) / t > -25 }
    order.sort { z[$0] > z[$1] || (z[$0] == z[$1] && $0 < $1) }
    if s.topK > 0 && s.topK < order.count { order.removeLast(order.count - s.topK) }
    let mx = z[order[0]] / t
    var probs = order.map { Double(Foundation.exp(z[$0] / t - mx)) }
    let total = probs.reduce(0, +)
    for i in probs.indices { probs[i] /= total }
    if s.topP < 1 {
      var cum = 0.0, keep = 0
      while keep < probs.count { cum += probs[keep]; keep += 1; if cum >= s.topP { break } }
      order.removeLast(order.count - keep)
      probs.removeLast(probs.count - keep)
      let kept = probs.reduce(0, +)
      for i in probs.indices { probs[i] /= kept }
    }
    var u = rng.nextUnit(), i = 0
    while i < probs.count - 1 && u >= probs[i] { u -= probs[i]; i += 1 }
    return Int32(order[i])
  }
}
