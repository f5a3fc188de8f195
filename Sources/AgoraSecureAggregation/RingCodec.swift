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

  /// Encodes `x[i] · factor` (after clipping x to ±range) in units of `quantum`, stochastically rounded —
  /// floor(v + r) with r uniform in [0, 1) from the top 24 bits of `random[i]` (any uniform words: a keystream) —
  /// into `out` (mod 2^32), and leaves in `x` what the encoding did not carry (x − q · quantum / factor: the error
  /// feedback). `out` may be `random` itself. A zero factor encodes zeros and keeps x whole.
  public static func encode(_ x: UnsafeMutableBufferPointer<Float>, factor: Float, range: Float, quantum: Float,
                            random: UnsafePointer<UInt32>, into out: UnsafeMutableBufferPointer<UInt32>) {
    precondition(out.count == x.count)
    let n = x.count
    guard n > 0 else { return }
    let o = out.baseAddress!, xs = x.baseAddress!
    guard factor > 0, quantum > 0 else {
      for i in 0..<n { o[i] = 0 }
      return
    }
    let scale = factor / quantum, back = quantum / factor, unit: Float = 1.0 / 16_777_216
    for i in 0..<n {
      let v = min(max(xs[i], -range), range) * scale
      let q = (v + Float(random[i] >> 8) * unit).rounded(.down)
      o[i] = UInt32(bitPattern: Int32(q))
      xs[i] -= q * back
    }
  }

  /// `encode` with a SplitMix generator for the rounding (for tests and small vectors).
  public static func encode(_ x: UnsafeMutableBufferPointer<Float>, factor: Float, range: Float, quantum: Float,
                            into out: UnsafeMutableBufferPointer<UInt32>, random: inout SplitMix) {
    let r = (0..<x.count).map { _ in UInt32(truncatingIfNeeded: random.next() >> 32) }
    r.withUnsafeBufferPointer { encode(x, factor: factor, range: range, quantum: quantum, random: $0.baseAddress!, into: out) }
  }

  /// The centred value of a ring element: in [−2^(b−1), 2^(b−1)).
  @inline(__always) public func signed(_ v: UInt32) -> Int64 {
    let m = Int64(v & mask)
    return m >= (Int64(1) << Int64(bits - 1)) ? m - (Int64(1) << Int64(bits)) : m
  }

  /// Packs the low b bits of each value, least significant bit first.
  public func pack(_ v: UnsafeBufferPointer<UInt32>, into out: UnsafeMutableRawBufferPointer) {
    precondition(out.count >= packedBytes(count: v.count))
    let p = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
    var o = 0, start = 0
    if bits == 12 {
      while start + 2 <= v.count {
        let x = (v[start] & 0xFFF) | (v[start + 1] & 0xFFF) << 12
        p[o] = UInt8(truncatingIfNeeded: x)
        p[o + 1] = UInt8(truncatingIfNeeded: x >> 8)
        p[o + 2] = UInt8(truncatingIfNeeded: x >> 16)
        start += 2
        o += 3
      }
    }
    let m = UInt64(mask), b = UInt64(bits)
    var acc: UInt64 = 0, n: UInt64 = 0
    for x in v[start...] {
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
    let p = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
    let s = sum.baseAddress!
    var i = 0, o = 0
    // Common widths in whole octet groups: 12 bits (two values in three octets), 16, 8.
    if bits == 12 {
      while i + 2 <= sum.count {
        let x = UInt32(p[o]) | UInt32(p[o + 1]) << 8 | UInt32(p[o + 2]) << 16
        s[i] &+= x & 0xFFF
        s[i + 1] &+= x >> 12
        i += 2
        o += 3
      }
    } else if bits == 16 {
      while i < sum.count {
        s[i] &+= UInt32(p[o]) | UInt32(p[o + 1]) << 8
        i += 1
        o += 2
      }
    } else if bits == 8 {
      while i < sum.count {
        s[i] &+= UInt32(p[o])
        i += 1
        o += 1
      }
    }
    let m = UInt64(mask), b = UInt64(bits)
    var acc: UInt64 = 0, n: UInt64 = 0
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
