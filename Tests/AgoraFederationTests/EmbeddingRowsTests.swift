@testable import AgoraRounds
@testable import AgoraCoordinator
@testable import AgoraSimulation
import AgoraModel
import AgoraTensor
import Foundation
import Testing

/// `EmbeddingRowWeights` (SPEC §4.2): the round's mean with each embedding row weighted by the nodes' token counts.
struct EmbeddingRowsTests {
  /// A model of 3 rows × 100 values of embedding after 50 other values, 400 values in all (so the rows straddle
  /// int8 blocks), and three nodes' updates.
  let offset = 50, rows = 3, width = 100, count = 400

  func updates(seed: UInt64) -> [[Float]] {
    var g = SplitMix64(seed: seed)
    return (0..<3).map { _ in (0..<count).map { _ in Float.random(in: -1..<1, using: &g) } }
  }

  /// The mean as `RoundCollector` and the simulation make it: decode with the token weight, fold the rows, finish.
  func mean(_ deltas: [[Float]], weights: [Double], counts: [[UInt32]?], format: DeltaFormat) throws -> [Float] {
    let sum = UnsafeMutablePointer<Float>.allocate(capacity: count)
    defer { sum.deallocate() }
    sum.initialize(repeating: 0, count: count)
    var rw = EmbeddingRowWeights(offset: offset, rows: rows, width: width)
    for (k, d) in deltas.enumerated() {
      let payload = d.withUnsafeBufferPointer { DeltaCodec.encode($0, format: format) }
      try payload.withUnsafeBytes {
        try DeltaCodec.decode($0, into: sum, count: count, mode: .add(Float(weights[k])))
        try rw.fold($0, format: format, count: count, weight: weights[k], relative: EmbeddingRowWeights.relative(counts: counts[k], rows: rows), into: sum)
      }
    }
    rw.finish(sum, count: count, weightTotal: weights.reduce(0, +))
    return Array(UnsafeBufferPointer(start: sum, count: count))
  }

  @Test func withoutCountsTheMeanIsTheTokenWeightedOneBitForBit() throws {
    let d = updates(seed: 1), w = [3000.0, 1000, 2000]
    let got = try mean(d, weights: w, counts: [nil, nil, nil], format: .fp32)
    // What the coordinator computes without row weights: Σ w_k Δ_k (in order), times 1/Σ w.
    var plain = [Float](repeating: 0, count: count)
    for (k, x) in d.enumerated() { for i in 0..<count { plain[i] += Float(w[k]) * x[i] } }
    let inv = Float(1 / w.reduce(0, +))
    #expect(got == plain.map { $0 * inv })
  }

  @Test func rowsFollowTheNodesThatHoldTheirTokens() throws {
    let d = updates(seed: 2), w = [3000.0, 1000, 2000]
    // Node 0 holds token 0 only, node 1 tokens 0 and 1 equally, node 2 sent no counts.
    let counts: [[UInt32]?] = [[500, 0, 0], [70, 70, 0], nil]
    let got = try mean(d, weights: w, counts: counts, format: .fp32)
    let eps = EmbeddingRowWeights.smoothing, V = Double(rows)
    func q(_ k: Int, _ r: Int) -> Double {
      guard let c = counts[k] else { return 1 / V }
      let t = c.reduce(0) { $0 + Double($1) }
      return (Double(c[r]) / t + eps / V) / (1 + eps)
    }
    for i in 0..<count {
      var want: Double
      if i >= offset && i < offset + rows * width {
        let r = (i - offset) / width
        let om = (0..<3).map { w[$0] * V * q($0, r) }
        want = (0..<3).reduce(0) { $0 + om[$1] * Double(d[$1][i]) } / om.reduce(0, +)
      } else {
        want = (0..<3).reduce(0) { $0 + w[$1] * Double(d[$1][i]) } / w.reduce(0, +)
      }
      #expect(abs(Double(got[i]) - want) < 1e-5, "value \(i): \(got[i]) against \(want)")
    }
    // Row 0 leans on node 0, whose text holds token 0 most; row 2, which neither node with counts holds, on node
    // 2, which sent none (it keeps its token weight there).
    let om0 = (0..<3).map { w[$0] * V * q($0, 0) }, om2 = (0..<3).map { w[$0] * V * q($0, 2) }
    #expect(om0[0] / om0.reduce(0, +) > 0.6 && om2[2] / om2.reduce(0, +) > 0.95, "\(om0) \(om2)")
  }

  /// Counts move a node's weight between rows but never raise it: however a node claims them, Σ_r ω_k,r = V·w_k.
  @Test func claimedCountsCannotRaiseANodesWeight() {
    for counts: [UInt32] in [[1, 0, 0], [UInt32.max, UInt32.max, 1], [7, 7, 7]] {
      let rel = EmbeddingRowWeights.relative(counts: counts, rows: 3)!
      #expect(abs(rel.reduce(0, +) - 3) < 1e-5, "\(counts): \(rel)")
      #expect(rel.allSatisfy { $0 > 0 })
    }
    #expect(EmbeddingRowWeights.relative(counts: [0, 0, 0], rows: 3) == nil)
    #expect(EmbeddingRowWeights.relative(counts: [1, 2], rows: 3) == nil)
  }

  /// The int8 path folds the same values the codec decodes: within int8's rounding of the fp32 result.
  @Test func int8UpdatesFoldLikeTheirDecodedValues() throws {
    let d = updates(seed: 3), w = [1.0, 1, 1]
    let counts: [[UInt32]?] = [[9, 1, 0], [0, 5, 5], [1, 1, 1]]
    let a = try mean(d, weights: w, counts: counts, format: .int8)
    let b = try mean(d, weights: w, counts: counts, format: .fp32)
    for i in 0..<count { #expect(abs(a[i] - b[i]) < 0.02, "value \(i)") }
  }

  /// The counts a node sends: zero below the minimum.
  @Test func countsBelowTheMinimumAreSentAsZero() {
    #expect(EmbeddingRowWeights.sentCounts([0, 3, 10, 11, 5_000_000_000], minimum: 10) == [0, 0, 10, 11, UInt32.max])
  }
}

/// The simulation's experimental mean by AdamW second moments (`MomentWeightedMean`).
struct MomentWeightedMeanTests {
  @Test func equalMomentsGiveTheTokenMeanAndAValueFollowsTheNodesThatTrainIt() throws {
    let count = 600, skip = 100..<200
    var g = SplitMix64(seed: 3)
    let d = (0..<2).map { _ in (0..<count).map { _ in Float.random(in: -1..<1, using: &g) } }
    let w: [Float] = [3, 1]
    // Node 0's moments: 1 everywhere; node 1's: 1 on the first 300 values, 0 after (it never trained them).
    let v = [FloatBuffer(count: count), FloatBuffer(count: count)]
    for i in 0..<count { v[0].pointer[i] = 1; v[1].pointer[i] = i < 300 ? 1 : 0 }
    let sum = FloatBuffer(count: count)
    for i in 0..<count { sum.pointer[i] = -7 }   // what the rows' mean left: kept where skipped
    for alpha: Float in [1, 0.5] {
      let m = MomentWeightedMean(count: count, skip: skip, alpha: alpha, block: 1)
      for k in 0..<2 {
        let payload = d[k].withUnsafeBufferPointer { DeltaCodec.encode($0, format: .fp32) }
        try payload.withUnsafeBytes { try m.add($0, weight: w[k], moments: v[k]) }
      }
      m.finish(sum)
      for i in 0..<count {
        let want: Float = skip.contains(i) ? -7 : i < 300 ? (3 * d[0][i] + d[1][i]) / 4 : d[0][i]
        #expect(abs(sum.pointer[i] - want) < 1e-5, "value \(i), α = \(alpha)")
      }
    }
  }
}
