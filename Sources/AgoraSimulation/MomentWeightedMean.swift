import AgoraRounds
import AgoraTensor
import Foundation

/// Experimental (the simulation only): a mean of the nodes' updates in which node k weighs, at value i, in
/// proportion to its tokens times F_k,i = (its AdamW second moment at i, averaged over i's block)^α — a diagonal
/// Fisher estimate, as in Fisher-weighted model merging. A value that only some nodes' text exercises follows
/// those nodes instead of being diluted by the others' Adam-normalised drift. Values in `skip` (the embedding,
/// which its rows' counts weigh) keep the mean they had.
struct MomentWeightedMean {
  let numerator: FloatBuffer
  let denominator: FloatBuffer
  let scratch: FloatBuffer
  let skip: Range<Int>
  let alpha: Float
  let block: Int
  let normalise: Bool

  init(count: Int, skip: Range<Int>, alpha: Float, block: Int, normalise: Bool = false) {
    numerator = FloatBuffer(count: count)
    denominator = FloatBuffer(count: count)
    scratch = FloatBuffer(count: count)
    self.skip = skip
    self.alpha = alpha
    self.block = max(1, block)
    self.normalise = normalise
  }

  func add(_ payload: UnsafeRawBufferPointer, weight w: Float, moments v: FloatBuffer) throws {
    let n = numerator.count
    try DeltaCodec.decode(payload, into: scratch.pointer, count: n, mode: .store)
    let f = factors(v)
    let (num, den, d) = (numerator.pointer, denominator.pointer, scratch.pointer)
    for (k, lo) in stride(from: 0, to: n, by: block).enumerated() {
      let fk = w * f[k]
      for i in lo..<min(n, lo + block) {
        num[i] += fk * d[i]
        den[i] += fk
      }
    }
  }

  /// Per block, (the mean of v over the block)^α; with `normalise`, divided by their mean over the blocks outside
  /// `skip`, so that a node's factors move its weight between blocks and cannot raise it.
  func factors(_ v: FloatBuffer) -> [Float] {
    let n = v.count
    var f: [Float] = []
    var total = 0.0, counted = 0
    for lo in stride(from: 0, to: n, by: block) {
      let hi = min(n, lo + block)
      var mean: Float = 0
      for i in lo..<hi { mean += v.pointer[i] }
      mean /= Float(hi - lo)
      let x = Float(Foundation.pow(Double(mean) + 1e-20, Double(alpha)))
      f.append(x)
      if !(skip.contains(lo) && skip.contains(hi - 1)) { total += Double(x); counted += 1 }
    }
    if normalise, counted > 0, total > 0 {
      let scale = Float(Double(counted) / total)
      for k in f.indices { f[k] *= scale }
    }
    return f
  }

  func finish(_ sum: FloatBuffer) {
    let (s, num, den) = (sum.pointer, numerator.pointer, denominator.pointer)
    for i in 0..<sum.count where !skip.contains(i) && den[i] > 0 { s[i] = num[i] / den[i] }
  }
}
