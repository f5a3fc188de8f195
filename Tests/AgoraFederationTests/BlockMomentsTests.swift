@testable import AgoraRounds
import AgoraModel
import AgoraTensor
import AgoraHarness
import AgoraTestSupport
import Foundation
import Testing

/// Averaging by the nodes' second moments (`rounds.moment_weighting`, `BlockMoments`): the moments that follow
/// an update, the factors made of them, and the mean they give.
struct BlockMomentsTests {
  static func randomValues(_ n: Int, seed: UInt64, in r: Range<Float>) -> [Float] {
    var g = SplitMix64(seed: seed)
    return (0..<n).map { _ in Float.random(in: r, using: &g) }
  }

  @Test func theMomentsFollowTheUpdateAndMalformedOnesAreRefused() throws {
    let count = 1000  // 4 blocks, the last of 232 values
    let d = Self.randomValues(count, seed: 1, in: -1..<1), v = Self.randomValues(count, seed: 2, in: 0..<3)
    let update = d.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .int8) }
    let trailer = v.withUnsafeBufferPointer { BlockMoments.trailer($0) }
    #expect(trailer.count == BlockMoments.trailerBytes(count: count) && trailer.count == 16 + 16)
    try (update + trailer).withUnsafeBytes { raw in
      let (u, m) = try BlockMoments.split(raw, count: count)
      #expect(u.count == update.count && Array(u) == update)
      for k in 0..<4 {
        let block = v[(k * 256)..<min(count, k * 256 + 256)]
        #expect(abs(m[k] - block.reduce(0, +) / Float(block.count)) < 1e-5)
      }
    }
    func refused(_ bytes: [UInt8]) -> DeltaError? {
      do { _ = try bytes.withUnsafeBytes { try BlockMoments.split($0, count: count) }; return nil } catch { return error as? DeltaError }
    }
    // No moments at all, a truncated trailer, bad magic, a wrong block count, NaN and a negative moment.
    guard case .moments(let s)? = refused(update) else { Issue.record("an update without moments was taken"); return }
    #expect(s.contains("no second moments"))
    #expect(refused(update + trailer.dropLast(4)) == .length(got: update.count + trailer.count - 4, expected: update.count + trailer.count))
    var bad = trailer
    bad[0] = UInt8(ascii: "X")
    #expect(refused(update + bad) == .moments("bad magic"))
    bad = trailer
    bad[8] = 5
    #expect(refused(update + bad) == .moments("holds 5 blocks, the model has 4"))
    for x in [Float.nan, -1, .infinity] {
      bad = trailer
      withUnsafeBytes(of: x.bitPattern.littleEndian) { for i in 0..<4 { bad[16 + 4 * 2 + i] = $0[i] } }
      guard case .moments(let s)? = refused(update + bad) else { Issue.record("moment \(x) was taken"); continue }
      #expect(s.hasPrefix("block 2's moment"))
    }
  }

  @Test func factorsMoveANodesWeightBetweenBlocksAndAreCapped() {
    // 5 blocks of 256; the first is the embedding's.
    let count = 1280, skip = 0..<256
    let f = BlockMoments.factors([100, 1, 4, 9, 16], alpha: 0.5, skip: skip, count: count)
    // √m = 10 | 1 2 3 4, scaled to mean 1 over the last four: × 0.4.
    #expect(zip(f, [4, 0.4, 0.8, 1.2, 1.6]).allSatisfy { abs($0 - $1) < 1e-5 }, "\(f)")
    #expect(BlockMoments.factors([0, 0, 0, 0, 0], alpha: 0.5, skip: skip, count: count) == [1, 1, 1, 1, 1])
    // One block far above the rest is capped: a node's moments cannot put all its weight into one block.
    // (Of 40 blocks outside the embedding, one holds nearly all of it: 40 before the cap.)
    let capped = BlockMoments.factors([1, 1e6] + [Float](repeating: 1e-6, count: 39), alpha: 1, skip: skip, count: 41 * 256)
    #expect(capped[1] == BlockMoments.factorCap && capped[2] < 1e-9, "\(capped.prefix(3))")
  }

  /// The mean as the coordinator makes it: equal moments give the token-weighted mean, a block that one node never
  /// trained follows the other, and the embedding keeps its rows' mean — also when the embedding's edges fall
  /// inside blocks (values 100 ..< 300 here), and for quantised updates.
  @Test(arguments: [DeltaFormat.fp32, .int8, .int4], [false, true])
  func aBlockFollowsTheNodesThatTrainIt(format: DeltaFormat, straddling: Bool) throws {
    let count = 1024, w: [Double] = [3, 1]
    let (offset, rowCount, width) = straddling ? (100, 2, 100) : (0, 2, 128)
    let embedding = offset..<(offset + rowCount * width)
    let d = [Self.randomValues(count, seed: 3, in: -1..<1), Self.randomValues(count, seed: 4, in: -1..<1)]
    let payloads = d.map { v in v.withUnsafeBufferPointer { DeltaCodec.encode($0, format: format) } }
    let dq: [[Float]] = try payloads.map { p in
      var out = [Float](repeating: 0, count: count)
      try p.withUnsafeBytes { try DeltaCodec.decode($0, into: &out, count: count, mode: .store) }
      return out
    }
    func mean(moments: [[Float]]) throws -> (mean: [Float], factors: [[Float]]) {
      var rows = EmbeddingRowWeights(offset: offset, rows: rowCount, width: width, parameters: count)
      #expect(rows.embedding == embedding)
      let sum = FloatBuffer(count: count)
      var factors: [[Float]] = []
      for k in 0..<2 {
        try payloads[k].withUnsafeBytes {
          let f = BlockMoments.factors(moments[k], alpha: 0.5, skip: rows.embedding, count: count)
          factors.append(f)
          try rows.addWeighted($0, format: format, count: count, weight: w[k], factors: f, into: sum.pointer)
          try rows.fold($0, format: format, count: count, weight: w[k], relative: nil, into: sum.pointer)
        }
      }
      rows.finish(sum.pointer, count: count, weightTotal: w.reduce(0, +))
      return (Array(sum.buffer), factors)
    }
    let tokenMean = (0..<count).map { Float((w[0] * Double(dq[0][$0]) + w[1] * Double(dq[1][$0])) / 4) }
    // Equal moments (up to a node's scale): the token mean.
    let same = try mean(moments: [[2, 2, 2, 2], [0.5, 0.5, 0.5, 0.5]]).mean
    #expect(zip(same, tokenMean).allSatisfy { abs($0 - $1) < 1e-5 })
    // Node 1 never trained block 3 (moment 0 there): block 3 follows node 0 alone.
    let (skewed, f) = try mean(moments: [[1, 1, 1, 1], [7, 1, 1, 0]])
    #expect(f[1][3] == 0 && f[0] == [1, 1, 1, 1])
    for i in 0..<count {
      let b = i / 256
      let want = embedding.contains(i) ? tokenMean[i]
        : Float((w[0] * Double(f[0][b] * dq[0][i]) + w[1] * Double(f[1][b] * dq[1][i])) / (w[0] * Double(f[0][b]) + w[1] * Double(f[1][b])))
      #expect(abs(skewed[i] - want) < 1e-5, "value \(i)")
      if b == 3 { #expect(abs(skewed[i] - dq[0][i]) < 1e-5) }
    }
  }

  /// The setting is checked: the coordinator must read each node's moments, and fp32 updates have no room for them.
  @Test(arguments: ["secure_aggregation = true", "dp_clip = 1.0", "compression_fp32"])
  func momentWeightingNeedsOpenQuantisedUpdates(other: String) throws {
    let h = try Harness(nodes: [("north", ["de"])], rounds: 1, innerSteps: 4,
                        extra: "moment_weighting = 0.5" + (other == "compression_fp32" ? "" : "\n" + other),
                        compression: other == "compression_fp32" ? "fp32" : "int8")
    defer { h.cleanup() }
    if other.hasPrefix("secure") { try namesMembers(h) }
    #expect {
      _ = try FederationConfig(path: h.dir + "/federation.toml")
    } throws: { ($0 as? ConfigError)?.key == "rounds.moment_weighting" }
    // The default: ½ where the coordinator reads each update, off where it cannot or must not.
    let ok = try Harness(nodes: [("north", ["de"])], rounds: 1, innerSteps: 4)
    defer { ok.cleanup() }
    #expect(try FederationConfig(path: ok.dir + "/federation.toml").momentWeighting == 0.5)
    let off = try Harness(nodes: [("north", ["de"])], rounds: 1, innerSteps: 4, extra: other == "compression_fp32" ? "" : other,
                          compression: other == "compression_fp32" ? "fp32" : "int8")
    defer { off.cleanup() }
    if other.hasPrefix("secure") { try namesMembers(off) }
    #expect(try FederationConfig(path: off.dir + "/federation.toml").momentWeighting == 0)
  }
}
