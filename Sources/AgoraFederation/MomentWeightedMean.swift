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

  init(count: Int, skip: Range<Int>, alpha: Float, block: Int) {
    numerator = FloatBuffer(count: count)
    denominator = FloatBuffer(count: count)
    scratch = FloatBuffer(count: count)
    self.skip = skip
    self.alpha = alpha
    self.block = max(1, block)
  }

  func add(_ payload: UnsafeRawBufferPointer, weight w: Float, moments v: FloatBuffer) throws {
    let n = numerator.count
    try DeltaCodec.decode(payload, into: scratch.pointer, count: n, mode: .store)
    let (num, den, d, vp, a, b) = (numerator.pointer, denominator.pointer, scratch.pointer, v.pointer, alpha, block)
    var lo = 0
    while lo < n {
      let hi = min(n, lo + b)
      var mean: Float = 0
      for i in lo..<hi { mean += vp[i] }
      mean /= Float(hi - lo)
      let f = w * Float(Foundation.pow(Double(mean) + 1e-20, Double(a)))
      for i in lo..<hi {
        num[i] += f * d[i]
        den[i] += f
      }
      lo = hi
    }
  }

  func finish(_ sum: FloatBuffer) {
    let (s, num, den) = (sum.pointer, numerator.pointer, denominator.pointer)
    for i in 0..<sum.count where !skip.contains(i) && den[i] > 0 { s[i] = num[i] / den[i] }
  }
}
