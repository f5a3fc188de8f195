import AgoraTensor
import Foundation

/// What turns a round's weighted sum of updates into their mean: every parameter divided by the nodes' total
/// weight, each token's embedding row by its own total — with `rounds.embedding_rows = "token_counts"`, the
/// nodes weighted by how often each trained on that token; otherwise every row's total is the nodes' weight.
/// A node whose text never holds a token still moves its row (its softmax pushes the token down, weight decay
/// shrinks it); averaged by tokens like every other parameter, that drift dilutes the progress of the nodes
/// that do use the token. Weighted by counts, a row follows the nodes that trained on it.
///
/// Node k, with weight w_k (its tokens this round, staleness applied) and token counts c_k (COUNTS), gives row r
/// of the V rows the weight
///
///     ω_k,r = w_k · V · q_k,r,   q_k,r = (c_k,r / Σ_t c_k,t + ε/V) / (1 + ε),   ε = 0.01
///
/// — w_k times how much more (or less) often than an average token its text holds token r. Σ_r ω_k,r = V·w_k: a
/// node cannot weigh more in the rows together than in any other tensor, whatever counts it claims. A node
/// without counts (a donor, or none sent) has q = 1/V, i.e. ω = w_k: with nobody's counts the mean is exactly the
/// token-weighted one. ε keeps every row's total above zero (a token no node's text holds is averaged by tokens).
/// Memory: V totals beside the running sum; the rows of each update are decoded a slice at a time.
public struct EmbeddingRowWeights {
  public static let smoothing = 0.01
  /// Where the embedding matrix (V rows of `width` values) starts among the parameters.
  public let offset: Int
  public let rows: Int
  public let width: Int
  /// Σ_k ω_k,r per row, so far.
  public private(set) var totals: [Double]
  /// With `rounds.moment_weighting`: Σ_k w_k·F_k,b per block of the parameters (`BlockMoments`), so far; the
  /// values outside the embedding are divided by their block's total instead of the nodes' total weight.
  public private(set) var blockTotals: [Double]?

  /// `parameters`: with moment weighting, the model's parameter count (nil: every block weighs by tokens).
  public init(offset: Int, rows: Int, width: Int, parameters: Int? = nil) {
    self.offset = offset
    self.rows = rows
    self.width = width
    totals = [Double](repeating: 0, count: rows)
    blockTotals = parameters.map { [Double](repeating: 0, count: BlockMoments.blocks(count: $0)) }
  }

  /// The values outside the embedding (the embedding's rows weigh by counts instead).
  package var embedding: Range<Int> { offset..<(offset + rows * width) }

  /// Adds an update into `sum` weighted by its moment factors (`BlockMoments.factors`), in place of the plain
  /// decode with weight `w`: block b, outside the embedding, takes w·F_b; the embedding's values take w (`fold`
  /// then gives its rows theirs). One pass over the payload; a block that straddles the embedding's edge takes w,
  /// and its values outside the embedding get the rest, w·(F_b − 1), from a second look at that block alone.
  public mutating func addWeighted(_ payload: UnsafeRawBufferPointer, format: DeltaFormat, count: Int, weight w: Double, factors: [Float],
                                   into sum: UnsafeMutablePointer<Float>) throws {
    guard var t = blockTotals, factors.count == t.count else { throw DeltaError.moments("\(factors.count) factors for \(blockTotals?.count ?? 0) blocks") }
    for b in t.indices { t[b] += w * Double(factors[b]) }
    blockTotals = t
    let block = DeltaCodec.block, skip = embedding
    var weights = [Float](repeating: 0, count: t.count)
    var straddling: [Int] = []
    for b in weights.indices {
      let lo = b * block, hi = min(count, lo + block)
      if skip.overlaps(lo..<hi) {
        weights[b] = Float(w)
        if !(skip.contains(lo) && skip.contains(hi - 1)) { straddling.append(b) }
      } else {
        weights[b] = Float(w * Double(factors[b]))
      }
    }
    try DeltaCodec.add(payload, into: sum, count: count, blockWeights: weights)
    guard !straddling.isEmpty else { return }
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: block)
    defer { scratch.deallocate() }
    for b in straddling {
      let lo = b * block, hi = min(count, lo + block)
      try DeltaCodec.values(of: payload, format: format, range: lo..<hi, count: count, into: scratch)
      for i in lo..<hi where !skip.contains(i) { sum[i] += Float(w * Double(factors[b] - 1)) * scratch[i - lo] }
    }
  }

  /// V·q_r for a node's counts (1 everywhere when it sent none, or only zeros).
  public static func relative(counts: [UInt32]?, rows: Int) -> [Float]? {
    guard let counts, counts.count == rows else { return nil }
    let total = counts.reduce(0.0) { $0 + Double($1) }
    guard total > 0 else { return nil }
    let v = Double(rows)
    return counts.map { Float(v * (Double($0) / total + smoothing / v) / (1 + smoothing)) }
  }

  /// Folds the rows of an update into `sum` again: the update is already in `sum` with weight `w`; its rows get
  /// the rest of their weight, w·(V·q_r − 1). `relative` is the node's V·q (nil: nothing to add).
  public mutating func fold(_ payload: UnsafeRawBufferPointer, format: DeltaFormat, count: Int, weight w: Double, relative: [Float]?,
                            into sum: UnsafeMutablePointer<Float>) throws {
    guard let relative else {
      for r in 0..<rows { totals[r] += w }
      return
    }
    for r in 0..<rows { totals[r] += w * Double(relative[r]) }
    let extra = relative.map { Float(w * (Double($0) - 1)) }
    let end = offset + rows * width
    let block = DeltaCodec.block
    let slice = 64 * block
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: slice)
    defer { scratch.deallocate() }
    var lo = offset / block * block
    while lo < end {
      let hi = min(count, lo + slice)
      try DeltaCodec.values(of: payload, format: format, range: lo..<hi, count: count, into: scratch)
      for i in max(lo, offset)..<min(hi, end) { sum[i] += extra[(i - offset) / width] * scratch[i - lo] }
      lo = hi
    }
  }

  /// Turns the weighted sum into the mean: every value divided by `weightTotal`, each embedding row by its total,
  /// and with moment weighting every other value by its block's total.
  public func finish(_ sum: UnsafeMutablePointer<Float>, count: Int, weightTotal: Double) {
    let inv = Float(1 / weightTotal)
    let rowInv = totals.map { Float(1 / $0) }
    let blockInv = blockTotals?.map { $0 > 0 ? Float(1 / $0) : 0 }
    let (offset, end, width, block) = (offset, offset + rows * width, width, DeltaCodec.block)
    Parallel.forRange(count, minChunk: 16384) { a, b in
      for i in a..<b { sum[i] *= (i >= offset && i < end) ? rowInv[(i - offset) / width] : (blockInv?[i / block] ?? inv) }
    }
  }
}

extension EmbeddingRowWeights {
  /// What a node sends in COUNTS: how often each token occurs in its training text, zero below `minimum`.
  public static func sentCounts(_ counts: [Int], minimum: Int) -> [UInt32] {
    counts.map { $0 >= minimum ? UInt32(min($0, Int(UInt32.max))) : 0 }
  }
}
