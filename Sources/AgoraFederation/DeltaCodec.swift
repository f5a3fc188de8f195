import AgoraTensor
import AgoraWire
import Foundation

/// The payload of an update (and of a version patch): a vector Δ as a byte stream.
///
///     header  = "AGDQ" ‖ format (u8: 0 fp32, 1 int8 blockwise) ‖ 3 zero octets ‖ count (u64)
///     fp32    = count little-endian binary32 values
///     int8    = for each block of 256 values (the last may be shorter):
///               scale (binary32, finite, ≥ 0) ‖ one int8 per value (x ≈ scale · q, q ∈ −127…127)
///
/// int8 is about 3.9× smaller than fp32 (INTELLECT-1 uses the same idea). A node keeps its quantisation
/// error and adds it to its next Δ (error feedback), so nothing is lost over rounds, only delayed. Version
/// patches are rounded stochastically instead (unbiased, no state to keep on the coordinator).
///
/// Blocks have a fixed stride, so encoding and decoding run in parallel over blocks; the arithmetic of each
/// value is fixed, so every process that decodes the same bytes gets bit-identical floats.
public enum DeltaFormat: UInt8, Sendable, CaseIterable {
  case fp32 = 0, int8 = 1
  public var name: String { self == .fp32 ? "fp32" : "int8" }
}

/// Why a payload was refused. Nothing is written to the target for a refused payload's header; a value
/// error stops decoding where it is found (callers decode into scratch or validate first).
public enum DeltaError: Error, Equatable, CustomStringConvertible {
  case header(String)
  case length(got: Int, expected: Int)
  case nonFinite(index: Int)
  public var description: String {
    switch self {
    case .header(let s): return "update payload header: \(s)"
    case .length(let g, let e): return "update payload is \(g) bytes, its header implies \(e)"
    case .nonFinite(let i): return "update value \(i) (or its block's scale) is NaN or infinite"
    }
  }
}

public enum DeltaCodec {
  public static let magic: [UInt8] = Array("AGDQ".utf8)
  public static let block = 256
  public static let headerBytes = 16
  static let blockBytes = 4 + block

  public static func encodedSize(count: Int, format: DeltaFormat) -> Int {
    switch format {
    case .fp32: return headerBytes + 4 * count
    case .int8: return headerBytes + count + 4 * ((count + block - 1) / block)
    }
  }

  /// How values are rounded to int8.
  public enum Rounding: Sendable {
    /// To nearest; with `errorFeedback` the lost part is added to the buffer's next use.
    case nearest
    /// Up or down with probability given by the remainder, from a counter-based generator keyed by `seed`:
    /// unbiased, and the same seed gives the same bytes.
    case stochastic(seed: UInt64)
  }

  /// Encodes `delta` (adding and updating `errorFeedback` for int8 when given).
  public static func encode(_ delta: UnsafeBufferPointer<Float>, format: DeltaFormat, errorFeedback: UnsafeMutableBufferPointer<Float>? = nil,
                            rounding: Rounding = .nearest) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: encodedSize(count: delta.count, format: format))
    out.withUnsafeMutableBytes { _ = encode(delta, format: format, into: $0, errorFeedback: errorFeedback, rounding: rounding) }
    return out
  }

  /// Encodes into `out` (at least `encodedSize` bytes); returns the bytes written.
  @discardableResult
  public static func encode(_ delta: UnsafeBufferPointer<Float>, format: DeltaFormat, into out: UnsafeMutableRawBufferPointer,
                            errorFeedback: UnsafeMutableBufferPointer<Float>? = nil, rounding: Rounding = .nearest) -> Int {
    let n = delta.count
    let size = encodedSize(count: n, format: format)
    precondition(out.count >= size, "DeltaCodec.encode: output buffer too small")
    do {
      let o = out.baseAddress!
      o.initializeMemory(as: UInt8.self, repeating: 0, count: headerBytes)
      for (i, b) in magic.enumerated() { o.storeBytes(of: b, toByteOffset: i, as: UInt8.self) }
      o.storeBytes(of: format.rawValue, toByteOffset: 4, as: UInt8.self)
      o.storeBytes(of: UInt64(n).littleEndian, toByteOffset: 8, as: UInt64.self)
      let body = o + headerBytes
      let src = delta.baseAddress!
      switch format {
      case .fp32:
        Parallel.forRange(n, minChunk: 1 << 16) { s, e in
          for i in s..<e { body.storeBytes(of: src[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
        }
      case .int8:
        let blocks = (n + block - 1) / block
        let fb = errorFeedback?.baseAddress
        Parallel.forRange(blocks, minChunk: 256) { bs, be in
          var vals = [Float](repeating: 0, count: block)
          for b in bs..<be {
            let start = b * block, m = min(block, n - start)
            var mx: Float = 0
            for k in 0..<m {
              let v = src[start + k] + (fb?[start + k] ?? 0)
              vals[k] = v
              mx = max(mx, abs(v))
            }
            let scale = mx / 127
            let at = body + b * blockBytes
            at.storeBytes(of: scale.bitPattern.littleEndian, as: UInt32.self)
            let inv = scale > 0 ? 1 / scale : 0
            let q8 = (at + 4).assumingMemoryBound(to: Int8.self)
            for k in 0..<m {
              let x = vals[k] * inv
              var q: Float
              switch rounding {
              case .nearest: q = x.rounded()
              case .stochastic(let seed):
                // floor(x + u) for x + u in [-127, 128): truncation of a positive number is its floor.
                q = Float(Int32(max(-127, min(127.99, x)) + uniform(seed, UInt64(start + k)) + 128)) - 128
              }
              q = max(-127, min(127, q))
              q8[k] = Int8(q)
              fb?[start + k] = vals[k] - q * scale
            }
          }
        }
      }
    }
    return size
  }

  /// A uniform number in [0, 1) from (seed, index): SplitMix64's finaliser over the pair.
  @inline(__always)
  static func uniform(_ seed: UInt64, _ i: UInt64) -> Float {
    var z = seed &+ i &* 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z ^= z >> 31
    return Float(z >> 40) * (1 / Float(1 << 24))
  }

  /// What decoding does with each value x at index i of the target.
  public enum Mode: Sendable {
    case store            // t[i] = x
    case subtract         // t[i] -= x   (applying a version patch: θ ← θ − step)
    case add(Float)       // t[i] += w·x (folding an update into the weighted sum)
  }

  /// Reads and checks a payload's header against the expected value count and the payload's length.
  public static func header(_ payload: UnsafeRawBufferPointer, count expected: Int) throws -> DeltaFormat {
    guard payload.count >= headerBytes else { throw DeltaError.length(got: payload.count, expected: headerBytes) }
    guard Array(payload[0..<4]) == magic else { throw DeltaError.header("bad magic") }
    guard let f = DeltaFormat(rawValue: payload[4]) else { throw DeltaError.header("unknown format \(payload[4])") }
    guard payload[5] == 0, payload[6] == 0, payload[7] == 0 else { throw DeltaError.header("reserved octets are not zero") }
    let n = UInt64(littleEndian: payload.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    guard n == UInt64(expected) else { throw DeltaError.header("holds \(n) values, the model has \(expected)") }
    let size = encodedSize(count: expected, format: f)
    guard payload.count == size else { throw DeltaError.length(got: payload.count, expected: size) }
    return f
  }

  /// Checks a whole payload (header, length, every value finite) and returns its format and squared L2 norm,
  /// without writing anything.
  public static func validate(_ payload: UnsafeRawBufferPointer, count: Int) throws -> (DeltaFormat, Double) {
    let f = try header(payload, count: count)
    let parts = UnsafeMutableBufferPointer<Double>.allocate(capacity: Parallel.threads)
    let bad = UnsafeMutableBufferPointer<Int>.allocate(capacity: Parallel.threads)
    defer { parts.deallocate(); bad.deallocate() }
    parts.initialize(repeating: 0)
    bad.initialize(repeating: -1)
    let body = payload.baseAddress! + headerBytes
    switch f {
    case .fp32:
      Parallel.forChunks(count) { c, s, e in
        var acc = 0.0
        for i in s..<e {
          let x = Float(bitPattern: UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
          guard x.isFinite else { bad[c] = i; return }
          acc += Double(x * x)
        }
        parts[c] = acc
      }
    case .int8:
      let blocks = (count + block - 1) / block
      Parallel.forChunks(blocks) { c, bs, be in
        var acc = 0.0
        for b in bs..<be {
          let at = body + b * blockBytes
          let scale = Float(bitPattern: UInt32(littleEndian: at.loadUnaligned(as: UInt32.self)))
          guard scale.isFinite, scale >= 0 else { bad[c] = b * block; return }
          let q8 = (at + 4).assumingMemoryBound(to: Int8.self)
          var s: Int32 = 0
          for k in 0..<min(block, count - b * block) { s &+= Int32(q8[k]) * Int32(q8[k]) }
          acc += Double(scale) * Double(scale) * Double(s)
        }
        parts[c] = acc
      }
    }
    if let i = bad.filter({ $0 >= 0 }).min() { throw DeltaError.nonFinite(index: i) }
    return (f, parts.reduce(0, +))
  }

  /// Decodes a whole payload into `target` (which holds `count` values) according to `mode`. Call
  /// `validate` first when the payload is untrusted and the target must not be half-written.
  public static func decode(_ payload: UnsafeRawBufferPointer, into target: UnsafeMutablePointer<Float>, count: Int, mode: Mode) throws {
    let f = try header(payload, count: count)
    let body = payload.baseAddress! + headerBytes
    let bad = ManagedIndex()
    switch f {
    case .fp32:
      Parallel.forRange(count, minChunk: 1 << 16) { s, e in
        for i in s..<e {
          let x = Float(bitPattern: UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
          guard x.isFinite else { bad.record(i); return }
          switch mode {
          case .store: target[i] = x
          case .subtract: target[i] -= x
          case .add(let w): target[i] += w * x
          }
        }
      }
    case .int8:
      let blocks = (count + block - 1) / block
      Parallel.forRange(blocks, minChunk: 256) { bs, be in
        for b in bs..<be {
          let at = body + b * blockBytes
          let scale = Float(bitPattern: UInt32(littleEndian: at.loadUnaligned(as: UInt32.self)))
          guard scale.isFinite, scale >= 0 else { bad.record(b * block); return }
          let q8 = (at + 4).assumingMemoryBound(to: Int8.self)
          let t = target + b * block
          let m = min(block, count - b * block)
          switch mode {
          case .store: for k in 0..<m { t[k] = Float(q8[k]) * scale }
          case .subtract: for k in 0..<m { t[k] -= Float(q8[k]) * scale }
          case .add(let w): for k in 0..<m { t[k] += w * (Float(q8[k]) * scale) }
          }
        }
      }
    }
    if let i = bad.value { throw DeltaError.nonFinite(index: i) }
  }
}

/// The smallest index any thread reported (for the first bad value of a parallel decode).
final class ManagedIndex: @unchecked Sendable {
  private var v: Int? = nil
  private let lock = NSLock()
  func record(_ i: Int) { lock.lock(); v = min(v ?? i, i); lock.unlock() }
  var value: Int? { lock.lock(); defer { lock.unlock() }; return v }
}
