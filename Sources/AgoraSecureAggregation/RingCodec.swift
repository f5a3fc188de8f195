/// Fixed-point vectors in the ring Z/2^b (2 ≤ b ≤ 32) for secure aggregation. A node encodes each parameter x
/// of its update as round(a · clip(x, ±c) / u) with stochastic rounding — a its share of the round's weight
/// (Σ a ≤ 1), c the range the round announces for x's tensor, u = c / (2^(b−1) − 1 − n) — so that the sum over
/// n nodes stays within ±(2^(b−1) − 1) and decodes exactly; the node keeps x − q·u/a as error feedback. A
/// masked vector is uniform in the ring, so it is sent packed, b bits per parameter.
public struct RingCodec: Sendable {
  public let bits: Int
  public init(bits: Int) throws {
    guard (2...32).contains(bits) else { throw SecureAggregationError.parameters("ring bits must be 2 to 32, not \(bits)") }
    self.bits = bits
  }

  public var mask: UInt32 { bits == 32 ? .max : (UInt32(1) << UInt32(bits)) - 1 }

  /// Octets of `count` packed values.
  public func packedBytes(count: Int) -> Int { (count * bits + 7) / 8 }

  /// The quantum for range `c` with `nodes` senders: the largest sum of levels plus rounding fits the ring's half.
  public func quantum(range c: Float, nodes: Int) throws -> Float {
    let levels = Double((UInt64(1) << UInt64(bits - 1)) - 1) - Double(nodes)
    guard levels >= 1 else { throw SecureAggregationError.parameters("a ring of \(bits) bits has no room for \(nodes) nodes") }
    return Float(Double(c) / levels)
  }

  /// Encodes `x[i] · factor` (after clipping x to ±range) in units of `quantum`, stochastically rounded with
  /// `random` (uniform in [0, 1)), into `out` (mod 2^32), and leaves in `x` what the encoding did not carry
  /// (x − q · quantum / factor: the error feedback). A zero factor encodes zeros and keeps x whole.
  public static func encode(_ x: UnsafeMutableBufferPointer<Float>, factor: Float, range: Float, quantum: Float,
                            into out: UnsafeMutableBufferPointer<UInt32>, random: inout SplitMix) {
    precondition(out.count == x.count)
    guard factor > 0, quantum > 0 else {
      for i in 0..<out.count { out[i] = 0 }
      return
    }
    let scale = factor / quantum, back = quantum / factor
    for i in 0..<x.count {
      let v = min(max(x[i], -range), range) * scale
      let f = v.rounded(.down)
      let q = f + (random.unit() < v - f ? 1 : 0)
      out[i] = UInt32(bitPattern: Int32(q))
      x[i] -= q * back
    }
  }

  /// The centred value of a ring element: in [−2^(b−1), 2^(b−1)).
  @inline(__always) public func signed(_ v: UInt32) -> Int64 {
    let m = Int64(v & mask)
    return m >= (Int64(1) << Int64(bits - 1)) ? m - (Int64(1) << Int64(bits)) : m
  }

  /// Packs the low b bits of each value, least significant bit first.
  public func pack(_ v: UnsafeBufferPointer<UInt32>, into out: UnsafeMutableRawBufferPointer) {
    precondition(out.count >= packedBytes(count: v.count))
    let m = UInt64(mask), b = UInt64(bits)
    var acc: UInt64 = 0, n: UInt64 = 0, o = 0
    let p = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
    for x in v {
      acc |= (UInt64(x) & m) << n
      n += b
      while n >= 8 {
        p[o] = UInt8(truncatingIfNeeded: acc)
        o += 1
        acc >>= 8
        n -= 8
      }
    }
    if n > 0 { p[o] = UInt8(truncatingIfNeeded: acc) }
  }

  /// Adds packed values to `sum` (mod 2^32); a length that is not exactly `count` values is an error.
  public func addPacked(_ bytes: UnsafeRawBufferPointer, into sum: UnsafeMutableBufferPointer<UInt32>) throws {
    guard bytes.count == packedBytes(count: sum.count) else {
      throw SecureAggregationError.parameters("a masked update of \(bytes.count) octets; \(sum.count) values of \(bits) bits take \(packedBytes(count: sum.count))")
    }
    let m = UInt64(mask), b = UInt64(bits)
    var acc: UInt64 = 0, n: UInt64 = 0, i = 0
    let p = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
    var o = 0
    while i < sum.count {
      while n < b {
        acc |= UInt64(p[o]) << n
        o += 1
        n += 8
      }
      sum[i] &+= UInt32(truncatingIfNeeded: acc & m)
      acc >>= b
      n -= b
      i += 1
    }
  }
}

/// SplitMix64: the stochastic rounding's generator (not a secret; seeded per node and round).
public struct SplitMix: Sendable {
  var state: UInt64
  public init(seed: UInt64) { state = seed }
  @inline(__always) public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  /// Uniform in [0, 1) with 24 bits.
  @inline(__always) public mutating func unit() -> Float { Float(next() >> 40) * (1.0 / 16_777_216) }
}
