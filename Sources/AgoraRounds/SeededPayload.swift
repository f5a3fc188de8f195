import AgoraModel
import Foundation

/// A valid update payload (`DeltaCodec`'s int8, int4 or fp4 format) that is never held whole: any range of its
/// octets is made on demand from a seed. Blocks have a fixed stride, so octet p belongs to block
/// (p − 16) ÷ stride, and each block is a function of (seed, block index) alone: its scale is a small positive
/// value, its codes pseudo-random, an odd last block's pad nibble zero.
///
/// For benchmarks with many senders of a large model (`agora bench coordinator --streamed`): a sender holds a
/// chunk, not Δ, its error feedback and its encoding (≈ 9 bytes per parameter for int4), so hundreds of them, or
/// sixteen of a 1B-parameter model, fit in one process. The coordinator cannot tell it from a node's encoded
/// update: it opens, validates and folds it the same way.
public struct SeededPayload: Sendable {
  public let count: Int
  public let format: DeltaFormat
  public let seed: UInt64
  /// The largest magnitude a value takes (scale × the largest code).
  public let amplitude: Float

  public init(count: Int, format: DeltaFormat, seed: UInt64, amplitude: Float = 7e-6) {
    precondition(format != .fp32, "SeededPayload: a quantised format (int8, int4, fp4)")
    precondition(count > 0, "SeededPayload: at least one value")
    self.count = count
    self.format = format
    self.seed = seed
    self.amplitude = amplitude
  }

  /// The payload's length in octets.
  public var size: Int { DeltaCodec.encodedSize(count: count, format: format) }

  var stride: Int { format == .int8 ? 4 + DeltaCodec.block : 4 + DeltaCodec.block / 2 }
  var blocks: Int { (count + DeltaCodec.block - 1) / DeltaCodec.block }

  /// Octets `offset ..< offset + out.count` of the payload (the range must lie within it).
  public func fill(_ out: UnsafeMutableRawBufferPointer, at offset: Int) {
    precondition(offset >= 0 && offset + out.count <= size, "SeededPayload.fill: range outside the payload")
    guard let o = out.baseAddress, out.count > 0 else { return }
    var p = offset, written = 0
    if p < DeltaCodec.headerBytes {
      let header = DeltaCodec.header(count: count, format: format)
      let n = min(DeltaCodec.headerBytes - p, out.count)
      header.withUnsafeBytes { (o).copyMemory(from: $0.baseAddress! + p, byteCount: n) }
      p += n; written += n
    }
    let stride = self.stride
    let block = UnsafeMutableRawPointer.allocate(byteCount: stride, alignment: 8)
    defer { block.deallocate() }
    while written < out.count {
      let b = (p - DeltaCodec.headerBytes) / stride
      let within = (p - DeltaCodec.headerBytes) - b * stride
      let length = makeBlock(b, into: block)
      let n = min(length - within, out.count - written)
      (o + written).copyMemory(from: block + within, byteCount: n)
      p += n; written += n
    }
  }

  /// `fill` into a new array.
  public func octets(at offset: Int, count n: Int) -> [UInt8] {
    var a = [UInt8](repeating: 0, count: n)
    a.withUnsafeMutableBytes { fill($0, at: offset) }
    return a
  }

  /// Writes block `b` (scale and codes) at `into`; returns its length in octets.
  func makeBlock(_ b: Int, into: UnsafeMutableRawPointer) -> Int {
    let values = min(DeltaCodec.block, count - b * DeltaCodec.block)
    let codes = format == .int8 ? values : (values + 1) / 2
    var g = SplitMix64(seed: seed ^ (UInt64(b) &* 0x9E37_79B9_7F4A_7C15))
    // A scale between 1/2 and 1 of the largest the amplitude allows, differing from block to block.
    let largest: Float = format == .int8 ? 127 : format == .int4 ? 7 : 1
    let scale = amplitude / largest * (0.5 + Float(g.next() >> 40) / Float(1 << 25))
    into.storeBytes(of: scale.bitPattern.littleEndian, as: UInt32.self)
    let c = into + 4
    var i = 0
    while i < codes {
      let word = g.next()
      let n = min(8, codes - i)
      for k in 0..<n { c.storeBytes(of: UInt8(truncatingIfNeeded: word >> (8 * UInt64(k))), toByteOffset: i + k, as: UInt8.self) }
      i += n
    }
    if format == .int8 {
      // −128 is not a code: fold it to −127.
      for k in 0..<codes where c.load(fromByteOffset: k, as: UInt8.self) == 0x80 { c.storeBytes(of: 0x81, toByteOffset: k, as: UInt8.self) }
    } else if values % 2 == 1 {
      let last = c.load(fromByteOffset: codes - 1, as: UInt8.self)
      c.storeBytes(of: last & 0x0F, toByteOffset: codes - 1, as: UInt8.self)
    }
    return 4 + codes
  }
}
