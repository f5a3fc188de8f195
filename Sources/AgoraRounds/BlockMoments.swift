import AgoraTensor
import Foundation

/// Averaging by the nodes' second moments (`rounds.moment_weighting = α`, SPEC §4.2 and §6.2).
///
/// A node's AdamW moves every value by about its learning rate whatever the size of its gradient there, so a
/// value that only some institutions' text exercises gets their step diluted by the others' Adam-normalised
/// drift when updates are averaged by tokens alone. The embedding rows have their own remedy (token counts,
/// `EmbeddingRowWeights`); for every other parameter each update carries, after its AGDQ payload, the node's
/// AdamW second moment averaged over each block of 256 values (a diagonal Fisher estimate, as in
/// Fisher-weighted model merging). The coordinator weighs node k at block b by w_k · F_k,b with
///
///     F_k,b = min(cap, m_k,b^α / mean_b'(m_k,b'^α))   (the mean over the blocks outside the embedding)
///
/// so a node's factors move its weight between blocks and cannot raise it beyond `factorCap` anywhere.
public enum BlockMoments {
  public static let magic: [UInt8] = Array("AGDM".utf8)
  public static let headerBytes = 16
  /// Values per block: the AGDQ block, so a moment covers exactly one block's scale.
  public static let block = DeltaCodec.block
  /// The most a node's normalised factor may weigh in one block (its mean over blocks is 1).
  public static let factorCap: Float = 16

  public static func blocks(count: Int) -> Int { (count + block - 1) / block }
  public static func trailerBytes(count: Int) -> Int { headerBytes + 4 * blocks(count: count) }

  /// What a node appends to its update: "AGDM" ‖ 4 zero octets ‖ blocks (u64) ‖ per block the mean of `v` over
  /// it (binary32).
  public static func trailer(_ v: UnsafeBufferPointer<Float>) -> [UInt8] {
    let n = v.count, b = blocks(count: n)
    var out = [UInt8](repeating: 0, count: trailerBytes(count: n))
    out.withUnsafeMutableBytes { raw in
      raw.copyBytes(from: magic)
      raw.storeBytes(of: UInt64(b).littleEndian, toByteOffset: 8, as: UInt64.self)
      for k in 0..<b {
        let lo = k * block, hi = min(n, lo + block)
        var s: Float = 0
        for i in lo..<hi { s += v[i] }
        let mean = s / Float(hi - lo)
        raw.storeBytes(of: mean.bitPattern.littleEndian, toByteOffset: headerBytes + 4 * k, as: UInt32.self)
      }
    }
    return out
  }

  /// Splits a staged upload into its AGDQ payload and the moments that follow it, checking the trailer
  /// (magic, count, length, every moment finite and ≥ 0). Throws `DeltaError` on anything else.
  public static func split(_ payload: UnsafeRawBufferPointer, count: Int) throws -> (update: UnsafeRawBufferPointer, moments: [Float]) {
    let format = try DeltaCodec.header(UnsafeRawBufferPointer(rebasing: payload.prefix(DeltaCodec.headerBytes)), count: count, checkLength: false)
    let size = DeltaCodec.encodedSize(count: count, format: format)
    let expected = size + trailerBytes(count: count)
    guard payload.count == expected else {
      throw payload.count == size ? DeltaError.moments("the update carries no second moments; the federation averages by them (rounds.moment_weighting)")
                                  : DeltaError.length(got: payload.count, expected: expected)
    }
    let t = UnsafeRawBufferPointer(rebasing: payload[size...])
    guard Array(t[0..<4]) == magic else { throw DeltaError.moments("bad magic") }
    guard t[4] == 0, t[5] == 0, t[6] == 0, t[7] == 0 else { throw DeltaError.moments("reserved octets are not zero") }
    let b = UInt64(littleEndian: t.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    guard b == UInt64(blocks(count: count)) else { throw DeltaError.moments("holds \(b) blocks, the model has \(blocks(count: count))") }
    var m = [Float](repeating: 0, count: Int(b))
    for k in 0..<Int(b) {
      let x = Float(bitPattern: UInt32(littleEndian: t.loadUnaligned(fromByteOffset: headerBytes + 4 * k, as: UInt32.self)))
      guard x.isFinite, x >= 0 else { throw DeltaError.moments("block \(k)'s moment is \(x): not finite, or negative") }
      m[k] = x
    }
    return (UnsafeRawBufferPointer(rebasing: payload[..<size]), m)
  }

  /// F_k,b from a node's moments: m^α, scaled to mean 1 over the blocks that hold a value outside `skip` (the
  /// embedding), capped at `factorCap`. All zeros (a node that trained nothing there) give 1 everywhere.
  public static func factors(_ moments: [Float], alpha: Double, skip: Range<Int>, count: Int) -> [Float] {
    var f = moments.map { Float(Foundation.pow(Double($0), alpha)) }
    var total = 0.0, counted = 0
    for k in f.indices {
      let lo = k * block, hi = min(count, lo + block)
      if skip.contains(lo) && skip.contains(hi - 1) { continue }
      total += Double(f[k])
      counted += 1
    }
    guard counted > 0, total > 0, total.isFinite else { return [Float](repeating: 1, count: f.count) }
    let scale = Double(counted) / total
    for k in f.indices { f[k] = min(factorCap, Float(Double(f[k]) * scale)) }
    return f
  }

  /// A node's factors in a few numbers: median, 99th percentile, maximum, and how many are at the cap.
  public static func summary(_ f: [Float]) -> String {
    let sorted = f.sorted()
    func q(_ p: Double) -> Float { sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(p * Double(sorted.count)))] }
    return String(format: "block factors %.3g to %.3g (median %.3g, 99th percentile %.3g), %d of %d at the cap", sorted.first ?? .nan, sorted.last ?? .nan,
                  q(0.5), q(0.99), sorted.filter { $0 >= factorCap }.count, sorted.count)
  }
}
