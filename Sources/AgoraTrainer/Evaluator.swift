import AgoraData
import AgoraModel
import Foundation

/// Bits per byte per language on validation text: the summed next-token loss in bits divided by the
/// UTF-8 bytes of the predicted tokens, so the figure does not depend on the tokenizer and is fair across
/// languages (`<|endoftext|>` counts as one byte).
public struct Evaluator {
  public let corpus: TokenizedCorpus
  public let byteLengths: [Int32]
  public let maxWindows: Int

  public init(corpus: TokenizedCorpus, tokenizer: Tokenizer, maxWindows: Int = 16) {
    self.corpus = corpus
    self.byteLengths = tokenizer.byteLengths.map { max($0, 1) }
    self.maxWindows = maxWindows
  }

  /// Non-overlapping windows of T+1 tokens (stride T) from the start of each validation stream.
  func windows(_ s: TokenStream, T: Int, limit: Int? = nil) -> [Int] {
    guard s.count > T + 1 else { return [] }
    let n = min(limit ?? maxWindows, maxWindows, (s.count - 1) / T)
    return (0..<n).map { $0 * T }
  }

  /// bits-per-byte per language with validation text, in the corpus's language order; only `languages` when
  /// given, and at most `windows` windows each when given (the first ones: the same every time).
  /// `bitsPerByte` with the bytes each figure is over (the UTF-8 bytes of the predicted tokens).
  public func scores(model: GPT, languages: Set<String>? = nil, windows limit: Int? = nil) throws -> [(language: String, bitsPerByte: Double, bytes: Int)] {
    let B = model.B, T = model.T
    var out: [(language: String, bitsPerByte: Double, bytes: Int)] = []
    for (li, lang) in corpus.languages.enumerated() {
      if let only = languages, !only.contains(lang) { continue }
      guard let s = corpus.valid[li] else { continue }
      let starts = windows(s, T: T, limit: limit)
      guard !starts.isEmpty else { continue }
      var nats = 0.0, bytes = 0.0
      var i = 0
      var window = [Int32](repeating: 0, count: T + 1)
      while i < starts.count {
        let rows = min(B, starts.count - i)
        var tokens = [Int32](repeating: 0, count: B * T), targets = tokens
        for r in 0..<B {
          // Rows past the end repeat the last window; their losses are not counted.
          let st = starts[min(i + r, starts.count - 1)]
          window.withUnsafeMutableBufferPointer { s.copy(start: st, count: T + 1, into: $0.baseAddress!) }
          for t in 0..<T { tokens[r * T + t] = window[t]; targets[r * T + t] = window[t + 1] }
        }
        _ = try model.forward(tokens: tokens, targets: targets)
        let losses = model.lastLosses
        for r in 0..<rows {
          for t in 0..<T {
            nats += Double(losses[r * T + t])
            bytes += Double(byteLengths[Int(targets[r * T + t])])
          }
        }
        i += rows
      }
      out.append((lang, nats / log(2.0) / bytes, Int(bytes)))
    }
    return out
  }

  /// The unigram baseline: a token model with add-one smoothed frequencies from all training text, scored
  /// in bits per byte on the same validation windows as `bitsPerByte`.
  public func unigramBitsPerByte(T: Int, vocabSize: Int) -> [(String, Double)] {
    var counts = [Double](repeating: 1, count: vocabSize)
    for s in corpus.train {
      for i in 0..<s.count { counts[Int(s[i])] += 1 }
    }
    let total = counts.reduce(0, +)
    let bits = counts.map { -log2($0 / total) }
    var out: [(String, Double)] = []
    for (li, lang) in corpus.languages.enumerated() {
      guard let s = corpus.valid[li] else { continue }
      let starts = windows(s, T: T)
      guard !starts.isEmpty else { continue }
      var b = 0.0, bytes = 0.0
      for st in starts {
        for t in 1...T {
          let id = Int(s[st + t])
          b += bits[id]
          bytes += Double(byteLengths[id])
        }
      }
      out.append((lang, b / bytes))
    }
    return out
  }
}
