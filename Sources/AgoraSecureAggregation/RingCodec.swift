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
  public func packedBytes(count: Int) -> Int { RingCodec.packedBytes(count: count, bits: bits) }
  /// … of `count` values of `bits` bits.
  public static func packedBytes(count: Int, bits: Int) -> Int { (count * bits + 7) / 8 }

  /// The smallest ring in which each of `nodes` equally weighted senders keeps at least the levels of a signed
  /// `nodeBits`-bit integer, ±(2^(nodeBits−1) − 1) (the quantum's rule below): about nodeBits + log2 n bits.
  /// E.g. 3 bits per node: 6 bits at 4 nodes, 8 at 16, 10 at 64 (4 bits per node: 7, 9, 11). At most 32.
  public static func bits(nodeBits p: Int, nodes n: Int) -> Int {
    let want = (Int64(1) << Int64(max(1, p) - 1)) - 1, n = Int64(max(1, n))
    for b in 2...32 where ((Int64(1) << Int64(b - 1)) - 1 - n) / n >= want { return b }
    return 32
  }

  /// The quantum for range `c` with `nodes` senders: the largest sum of levels plus rounding fits the ring's half.
  public func quantum(range c: Float, nodes: Int) throws -> Float {
    let levels = Double((UInt64(1) << UInt64(bits - 1)) - 1) - Double(nodes)
    guard levels >= 1 else { throw SecureAggregationError.parameters("a ring of \(bits) bits has no room for \(nodes) nodes") }
    return Float(Double(c) / levels)
  }

  /// Encodes `x[i] · factor` (after clipping x to ±range; NaN counts as 0) in units of `quantum`, stochastically
  /// rounded — floor(v + r) with r uniform in [0, 1) — into `out` (mod 2^32), and leaves in `x` what the encoding
  /// did not carry (x − q · quantum / factor: the error feedback). r comes from a counter-based hash of `seed` and
  /// the index `first + i` (24 bits of it; rounding needs independence across a vector, not secrecy), so a vector
  /// encoded in pieces with their `first` indexes equals one encoded whole. A zero factor encodes zeros and keeps
  /// x whole. With |levels| < 2^22 (rings of up to 22 bits) the loop is branch-free and vectorises.
  public static func encode(_ x: UnsafeMutableBufferPointer<Float>, factor: Float, range: Float, quantum: Float,
                            seed: UInt64, first: Int = 0, into out: UnsafeMutableBufferPointer<UInt32>) {
    precondition(out.count == x.count)
    let n = x.count
    guard n > 0 else { return }
    let o = out.baseAddress!, xs = x.baseAddress!
    guard factor > 0, quantum > 0 else {
      for i in 0..<n { o[i] = 0 }
      return
    }
    let scale = factor / quantum, back = quantum / factor, unit: Float = 1.0 / 16_777_216
    let (s0, s1) = (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
    let start = UInt32(truncatingIfNeeded: first)
    if range * scale < 4_194_000 {
      // q is an integer with |q| < 2^22: q + 1.5·2^23 is exact and its low mantissa bits are q + 2^22.
      let magic: Float = 12_582_912
      for i in 0..<n {
        let xi = xs[i]
        let c = xi > range ? range : (xi < -range ? -range : (xi == xi ? xi : 0))
        let r = Float(Int32(bitPattern: mix(start &+ UInt32(truncatingIfNeeded: i), s0, s1) >> 8)) * unit
        let q = (c * scale + r).rounded(.down)
        o[i] = UInt32(bitPattern: Int32(bitPattern: (q + magic).bitPattern) &- 0x4B40_0000)
        xs[i] = (xi == xi ? xi : 0) - q * back
      }
    } else {
      for i in 0..<n {
        let xi = xs[i].isNaN ? 0 : xs[i]
        let r = Float(Int32(bitPattern: mix(start &+ UInt32(truncatingIfNeeded: i), s0, s1) >> 8)) * unit
        let q = (min(max(xi, -range), range) * scale + r).rounded(.down)
        o[i] = UInt32(bitPattern: Int32(q))
        xs[i] = xi - q * back
      }
    }
  }

  /// The rounding's hash of index i under a seed: two rounds of a 32-bit integer finaliser (Wellons's lowbias32).
  @inline(__always) static func mix(_ i: UInt32, _ s0: UInt32, _ s1: UInt32) -> UInt32 {
    var h = (i &* 0x9E37_79B9) ^ s0
    h ^= h >> 16; h &*= 0x7FEB_352D; h ^= h >> 15; h &*= 0x846C_A68B; h ^= h >> 16
    h ^= s1
    h ^= h >> 16; h &*= 0x7FEB_352D; h ^= h >> 15; h &*= 0x846C_A68B; h ^= h >> 16
    return h
  }

  /// `encode` with its seed drawn from a SplitMix generator (for tests and small vectors).
  public static func encode(_ x: UnsafeMutableBufferPointer<Float>, factor: Float, range: Float, quantum: Float,
                            into out: UnsafeMutableBufferPointer<UInt32>, random: inout SplitMix) {
    encode(x, factor: factor, range: range, quantum: quantum, seed: random.next(), into: out)
  }

  /// The centred value of a ring element: in [−2^(b−1), 2^(b−1)).
  @inlinable @inline(__always) public func signed(_ v: UInt32) -> Int64 {
    let m = Int64(v & mask)
    return m >= (Int64(1) << Int64(bits - 1)) ? m - (Int64(1) << Int64(bits)) : m
  }

  /// Calls `body(b)` with b a literal for the widths a ring sized by per-node bits usually has (5 to 11 but 8, which
  /// has its own loops; 3 bits per node give 5, 6, 7, 9 and 10 from 2 to 64 nodes), so that an inlined loop over
  /// b-bit fields gets constant shifts (a run-time b makes it 2–4× slower).
  @inline(__always) static func withConstant(_ b: Int, _ body: (Int) -> Void) {
    switch b {
    case 5: body(5)
    case 6: body(6)
    case 7: body(7)
    case 9: body(9)
    case 10: body(10)
    case 11: body(11)
    default: body(b)
    }
  }

  /// Packs the low b bits of each value, least significant bit first.
  public func pack(_ v: UnsafeBufferPointer<UInt32>, into out: UnsafeMutableRawBufferPointer) {
    precondition(out.count >= packedBytes(count: v.count))
    let p = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
    var o = 0, start = 0
    if bits == 12 {
      // Four values in six octets, written as one 64-bit word whose top two octets the next group overwrites.
      let raw = out.baseAddress!
      while start + 4 <= v.count && o + 8 <= out.count {
        let x = UInt64(v[start] & 0xFFF) | UInt64(v[start + 1] & 0xFFF) << 12 | UInt64(v[start + 2] & 0xFFF) << 24 | UInt64(v[start + 3] & 0xFFF) << 36
        raw.storeBytes(of: x.littleEndian, toByteOffset: o, as: UInt64.self)
        start += 4
        o += 6
      }
      while start + 2 <= v.count {
        let x = (v[start] & 0xFFF) | (v[start + 1] & 0xFFF) << 12
        p[o] = UInt8(truncatingIfNeeded: x)
        p[o + 1] = UInt8(truncatingIfNeeded: x >> 8)
        p[o + 2] = UInt8(truncatingIfNeeded: x >> 16)
        start += 2
        o += 3
      }
    } else if bits == 8 {
      // One loop per width, with no test inside: it vectorises (a narrowing store).
      for i in 0..<v.count { p[i] = UInt8(truncatingIfNeeded: v[i]) }
      (start, o) = (v.count, v.count)
    } else if bits == 16 {
      let h = out.baseAddress!.assumingMemoryBound(to: UInt16.self)
      for i in 0..<v.count { h[i] = UInt16(truncatingIfNeeded: v[i]).littleEndian }
      (start, o) = (v.count, 2 * v.count)
    } else if bits < 16 {
      // Other widths below 16 (e.g. the 7 to 11 bits of a ring sized by per-node bits): eight values in b octets,
      // written as one 128-bit word whose top 16 − b octets the next group overwrites; b a constant in each copy of
      // the loop, as in `addPacked`.
      @inline(__always) func groups(_ b: Int) {
        let raw = out.baseAddress!, m = (UInt128(1) << b) - 1
        while start + 8 <= v.count && o + 16 <= out.count {
          var x: UInt128 = 0
          for j in 0..<8 { x |= (UInt128(v[start + j]) & m) << (j * b) }
          raw.storeBytes(of: x.littleEndian, toByteOffset: o, as: UInt128.self)
          start += 8
          o += b
        }
      }
      RingCodec.withConstant(bits, groups)
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
    // Common widths in whole octet groups: 12 bits (two values in three octets), 16, 8; below 16, eight values in b octets.
    if bits == 12 {
      // Four values from six octets, read as one 64-bit word (while eight octets remain).
      let raw = bytes.baseAddress!
      while i + 4 <= sum.count && o + 8 <= bytes.count {
        let x = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self))
        s[i] &+= UInt32(truncatingIfNeeded: x) & 0xFFF
        s[i + 1] &+= UInt32(truncatingIfNeeded: x >> 12) & 0xFFF
        s[i + 2] &+= UInt32(truncatingIfNeeded: x >> 24) & 0xFFF
        s[i + 3] &+= UInt32(truncatingIfNeeded: x >> 36) & 0xFFF
        i += 4
        o += 6
      }
      while i + 2 <= sum.count {
        let x = UInt32(p[o]) | UInt32(p[o + 1]) << 8 | UInt32(p[o + 2]) << 16
        s[i] &+= x & 0xFFF
        s[i + 1] &+= x >> 12
        i += 2
        o += 3
      }
    } else if bits == 16 {
      let raw = bytes.baseAddress!
      for k in 0..<sum.count { s[k] &+= UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * k, as: UInt16.self))) }
      (i, o) = (sum.count, 2 * sum.count)
    } else if bits == 8 {
      for k in 0..<sum.count { s[k] &+= UInt32(p[k]) }
      (i, o) = (sum.count, sum.count)
    } else if bits < 16 {
      // Eight values from b octets, read as one 128-bit word (while sixteen octets remain). Each usual width gets its
      // own copy of the loop with b a constant, so the shifts are immediates.
      @inline(__always) func groups(_ b: Int) {
        let raw = bytes.baseAddress!, m = (UInt128(1) << b) - 1
        while i + 8 <= sum.count && o + 16 <= bytes.count {
          let x = UInt128(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt128.self))
          for j in 0..<8 { s[i + j] &+= UInt32(truncatingIfNeeded: (x >> (j * b)) & m) }
          i += 8
          o += b
        }
      }
      RingCodec.withConstant(bits, groups)
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
