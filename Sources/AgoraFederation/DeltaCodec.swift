import AgoraTensor
import AgoraWire

/// The payload of an update: a pseudo-gradient Δ = θ_base − θ_local as a byte stream.
///
///     header  = "AGDQ" ‖ format (u8: 0 fp32, 1 int8 blockwise) ‖ 3 zero octets ‖ count (u64)
///     fp32    = count little-endian binary32 values
///     int8    = for each block of 256 values (the last may be shorter):
///               scale (binary32, = max|x| / 127) ‖ one int8 per value (x ≈ scale · q)
///
/// int8 is about 3.9× smaller than fp32 (INTELLECT-1 uses the same idea); the node keeps the quantisation
/// error and adds it to its next Δ (error feedback), so nothing is lost over rounds, only delayed.
public enum DeltaFormat: UInt8, Sendable, CaseIterable {
  case fp32 = 0, int8 = 1
  public var name: String { self == .fp32 ? "fp32" : "int8" }
}

public enum DeltaCodec {
  public static let magic: [UInt8] = Array("AGDQ".utf8)
  public static let block = 256
  public static let headerBytes = 16

  public static func encodedSize(count: Int, format: DeltaFormat) -> Int {
    switch format {
    case .fp32: return headerBytes + 4 * count
    case .int8: return headerBytes + count + 4 * ((count + block - 1) / block)
    }
  }

  /// Encodes `delta` (adding and updating `errorFeedback` for int8 when given).
  public static func encode(_ delta: UnsafeBufferPointer<Float>, format: DeltaFormat, errorFeedback: UnsafeMutableBufferPointer<Float>? = nil) -> [UInt8] {
    var w = ByteWriter(capacity: encodedSize(count: delta.count, format: format))
    w.raw(magic)
    w.u8(format.rawValue)
    w.raw([0, 0, 0])
    w.u64(UInt64(delta.count))
    switch format {
    case .fp32:
      for x in delta { w.u32(x.bitPattern) }
    case .int8:
      var start = 0
      var vals = [Float](repeating: 0, count: block)
      while start < delta.count {
        let n = min(block, delta.count - start)
        var mx: Float = 0
        for k in 0..<n {
          let v = delta[start + k] + (errorFeedback?[start + k] ?? 0)
          vals[k] = v
          mx = max(mx, abs(v))
        }
        let scale = mx / 127
        w.u32(scale.bitPattern)
        let inv = scale > 0 ? 1 / scale : 0
        for k in 0..<n {
          let q = max(-127, min(127, (vals[k] * inv).rounded()))
          w.u8(UInt8(bitPattern: Int8(q)))
          errorFeedback?[start + k] = vals[k] - q * scale
        }
        start += n
      }
    }
    return w.bytes
  }
}

/// Decodes a Δ payload as it streams in, chunk by chunk, into a float buffer; trusts nothing.
public struct DeltaDecoder {
  public enum Failure: Error, Equatable, CustomStringConvertible {
    case header(String), overflow, incomplete(got: Int, expected: Int), nonFinite(index: Int)
    public var description: String {
      switch self {
      case .header(let s): return "update payload header: \(s)"
      case .overflow: return "update payload is longer than its header says"
      case .incomplete(let g, let e): return "update payload ended after \(g) of \(e) values"
      case .nonFinite(let i): return "update value \(i) is NaN or infinite"
      }
    }
  }

  let out: UnsafeMutablePointer<Float>
  let capacity: Int
  var carry: [UInt8] = []
  public private(set) var format: DeltaFormat? = nil
  public private(set) var count = 0
  public private(set) var written = 0
  var scale: Float = 0
  var inBlock = 0  // values of the current int8 block still to read (0: next is a scale)

  public init(into out: UnsafeMutablePointer<Float>, capacity: Int) {
    self.out = out
    self.capacity = capacity
  }

  public mutating func feed(_ bytes: [UInt8]) throws {
    var data = bytes[...]
    if format == nil {
      carry += data
      guard carry.count >= DeltaCodec.headerBytes else { return }
      var r = ByteReader(Array(carry.prefix(DeltaCodec.headerBytes)))
      guard (try? r.raw(4, "magic")) == DeltaCodec.magic else { throw Failure.header("bad magic") }
      guard let f = DeltaFormat(rawValue: (try? r.u8("format")) ?? 255) else { throw Failure.header("unknown format") }
      _ = try? r.raw(3, "reserved")
      let n = Int((try? r.u64("count")) ?? 0)
      guard n == capacity else { throw Failure.header("holds \(n) values, the model has \(capacity)") }
      format = f
      count = n
      data = carry.dropFirst(DeltaCodec.headerBytes)
      carry = []
    }
    if !carry.isEmpty { data = (carry + data)[...]; carry = [] }
    var i = data.startIndex
    switch format! {
    case .fp32:
      while data.endIndex - i >= 4 {
        guard written < count else { throw Failure.overflow }
        let v = Float(bitPattern: UInt32(data[i]) | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2]) << 16 | UInt32(data[i + 3]) << 24)
        guard v.isFinite else { throw Failure.nonFinite(index: written) }
        out[written] = v
        written += 1
        i += 4
      }
    case .int8:
      while i < data.endIndex {
        if inBlock == 0 {
          guard written < count else { throw Failure.overflow }
          guard data.endIndex - i >= 4 else { break }
          scale = Float(bitPattern: UInt32(data[i]) | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2]) << 16 | UInt32(data[i + 3]) << 24)
          guard scale.isFinite, scale >= 0 else { throw Failure.nonFinite(index: written) }
          inBlock = min(DeltaCodec.block, count - written)
          i += 4
          continue
        }
        out[written] = Float(Int8(bitPattern: data[i])) * scale
        written += 1
        inBlock -= 1
        i += 1
      }
    }
    carry = Array(data[i...])
  }

  /// Checks that exactly `count` values arrived.
  public func finish() throws {
    guard format != nil else { throw Failure.header("missing") }
    guard written == count, carry.isEmpty, inBlock == 0 else { throw Failure.incomplete(got: written, expected: count) }
  }
}
