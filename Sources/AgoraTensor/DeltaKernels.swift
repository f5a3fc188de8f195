/// The per-value kernels of update and patch payloads (`DeltaCodec` in AgoraRounds holds the format:
/// fp32 little-endian, or int8 blocks of a 4-octet scale and `block` values). They live here to be compiled
/// with the numeric kernels' flags: without range checks on every conversion they vectorise, and they run
/// over every value of every update the coordinator folds (16 × 14M per round at N = 16) and of every patch
/// it encodes.
#if _endian(big)
#error("DeltaKernels loads little-endian payload values with whole-vector loads: add a byte-swapping path first")
#endif

public enum DeltaKernels {
  /// What decoding does with each value x at index i of the target.
  public enum Apply: Sendable {
    case store            // t[i] = x
    case subtract         // t[i] -= x   (applying a version patch: θ ← θ − step)
    case add(Float)       // t[i] += w·x (folding an update into the weighted sum)
  }

  /// Quantises one block `x[0..<m]` (with `feedback[0..<m]` added when given) to `q8` with a scale of
  /// max|v| / 127, and returns the scale. A NaN in the block makes the scale NaN (the decoder refuses it).
  /// `seed` nil rounds to nearest; otherwise up or down with probability given by the remainder, from
  /// `bits(seed, index)` for the values at `index` and `index + 1` (24 bits each): unbiased, and the same
  /// seed gives the same bytes. With `feedback`, what rounding lost is stored back into it. `scratch` holds
  /// at least `m` floats.
  public static func int8Block(_ x: UnsafePointer<Float>, count m: Int, feedback: UnsafeMutablePointer<Float>?, seed: UInt64?, index: UInt64,
                               scratch vals: UnsafeMutablePointer<Float>, into q8: UnsafeMutablePointer<Int8>) -> Float {
    let scale = gather(x, count: m, feedback: feedback, into: vals) / 127
    let inv = scale > 0 ? 1 / scale : 0
    if let seed {
      // floor(x + u) with x clamped to [-127, 127.99]: x + u + 128 is positive, so truncation is the floor.
      var k = 0
      while k + 1 < m {
        let r = bits(seed, index &+ UInt64(k))
        q8[k] = stochastic(vals[k] * inv, Float(r >> 40) * 0x1p-24)
        q8[k + 1] = stochastic(vals[k + 1] * inv, Float((r >> 8) & 0xFF_FFFF) * 0x1p-24)
        k += 2
      }
      if k < m { q8[k] = stochastic(vals[k] * inv, Float(bits(seed, index &+ UInt64(k)) >> 40) * 0x1p-24) }
    } else {
      for k in 0..<m { q8[k] = Int8(max(-127, min(127, (vals[k] * inv).rounded()))) }
    }
    if let f = feedback {
      for k in 0..<m { f[k] = vals[k] - Float(q8[k]) * scale }
    }
    return scale
  }

  /// `vals[k] = x[k] + feedback[k]` (or `x[k]`) for a block of `m` values; returns the largest magnitude. It is
  /// taken over the bit patterns: an integer maximum vectorises, and a NaN (above +inf) wins it.
  @inline(__always)
  static func gather(_ x: UnsafePointer<Float>, count m: Int, feedback: UnsafeMutablePointer<Float>?, into vals: UnsafeMutablePointer<Float>) -> Float {
    var top: UInt32 = 0
    if let f = feedback {
      for k in 0..<m { let v = x[k] + f[k]; vals[k] = v; top = max(top, v.bitPattern & 0x7FFF_FFFF) }
    } else {
      for k in 0..<m { let v = x[k]; vals[k] = v; top = max(top, v.bitPattern & 0x7FFF_FFFF) }
    }
    return Float(bitPattern: top)
  }

  @inline(__always)
  static func stochastic(_ x: Float, _ u: Float) -> Int8 {
    Int8(truncatingIfNeeded: min(127, Int32(max(-127, min(127.99, x)) + u + 128) - 128))
  }

  /// 64 random bits from (seed, index): SplitMix64's finaliser over the pair.
  @inline(__always)
  public static func bits(_ seed: UInt64, _ i: UInt64) -> UInt64 {
    var z = seed &+ i &* 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// Σ scale² · q² over the int8 blocks `blocks` of a payload body (`count` values in all), or the first
  /// value index of a block whose scale is negative or not finite.
  public static func int8SquaredNorm(_ body: UnsafeRawPointer, blocks: Range<Int>, count: Int, block: Int) -> (Double, bad: Int?) {
    var acc = 0.0
    for b in blocks {
      let at = body + b * (4 + block)
      let scale = Float(bitPattern: UInt32(littleEndian: at.loadUnaligned(as: UInt32.self)))
      guard scale.isFinite, scale >= 0 else { return (acc, b * block) }
      let q8 = (at + 4).assumingMemoryBound(to: Int8.self)
      var s: Int32 = 0
      for k in 0..<min(block, count - b * block) { s &+= Int32(q8[k]) &* Int32(q8[k]) }
      acc += Double(scale) * Double(scale) * Double(s)
    }
    return (acc, nil)
  }

  /// Decodes the int8 blocks `blocks` into `target` (`count` values in all) as `mode` says; `body` holds the
  /// blocks from block `first` on. Returns the first value index of a block with a bad scale (nothing of that
  /// block or after it is written).
  public static func int8Apply(_ body: UnsafeRawPointer, first: Int = 0, blocks: Range<Int>, count: Int, block: Int, into target: UnsafeMutablePointer<Float>,
                               mode: Apply) -> Int? {
    for b in blocks {
      let at = body + (b - first) * (4 + block)
      let scale = Float(bitPattern: UInt32(littleEndian: at.loadUnaligned(as: UInt32.self)))
      guard scale.isFinite, scale >= 0 else { return b * block }
      let q8 = (at + 4).assumingMemoryBound(to: Int8.self)
      let t = target + b * block
      let m = min(block, count - b * block)
      switch mode {
      case .store: for k in 0..<m { t[k] = Float(q8[k]) * scale }
      case .subtract: for k in 0..<m { t[k] -= Float(q8[k]) * scale }
      case .add(let w): for k in 0..<m { t[k] += w * (Float(q8[k]) * scale) }
      }
    }
    return nil
  }

  /// A 4-bit code: a sign bit (bit 3) and a magnitude index m (bits 0–2) into `magnitudes`; the value is
  /// ±scale · magnitudes[m]. `int4` is uniform (m itself: scale = max|v| / 7); `fp4` is FP4 E3M0 as
  /// Streaming DiLoCo sends its outer gradients (0 and seven powers of two: scale = max|v|, magnitudes
  /// 0, 2⁻⁶ … 2⁰). Both have 15 values (±0 alike).
  public enum Nibble: Sendable {
    case int4, fp4
    public var magnitudes: [Float] {
      switch self {
      case .int4: return [0, 1, 2, 3, 4, 5, 6, 7]
      case .fp4: return [0, 0x1p-6, 0x1p-5, 0x1p-4, 0x1p-3, 0x1p-2, 0x1p-1, 1]
      }
    }
    /// The midpoints between neighbouring magnitudes: m is how many of them |v| / scale reaches (to nearest).
    var midpoints: SIMD8<Float> {
      let t = magnitudes
      var m = SIMD8<Float>(repeating: .infinity)
      for i in 0..<7 { m[i] = (t[i] + t[i + 1]) / 2 }
      return m
    }
    var top: Float { self == .int4 ? 7 : 1 }
  }

  /// Quantises one block `x[0..<m]` (with `feedback[0..<m]` added when given) to 4-bit codes, two per octet
  /// (value 2j in the low nibble of octet j, 2j + 1 in the high one; an odd block's last high nibble is 0), to
  /// nearest; returns the scale (NaN when the block holds a NaN). With `feedback`, what rounding lost is stored
  /// back into it. `scratch` holds at least `m` floats.
  public static func nibbleBlock(_ x: UnsafePointer<Float>, count m: Int, kind: Nibble, feedback: UnsafeMutablePointer<Float>?,
                                 scratch vals: UnsafeMutablePointer<Float>, into q: UnsafeMutablePointer<UInt8>) -> Float {
    let scale = gather(x, count: m, feedback: feedback, into: vals) / kind.top
    let inv = scale > 0 ? 1 / scale : 0
    let mid = kind.midpoints, table = kind.magnitudes
    @inline(__always) func code(_ v: Float) -> UInt8 {
      let a = SIMD8<Float>(repeating: abs(v) * inv)
      let idx = UInt8(SIMD8<Int32>(repeating: 0).replacing(with: 1, where: a .>= mid).wrappedSum())  // midpoints[7] is +inf: at most 7
      return idx | (v.sign == .minus && idx > 0 ? 8 : 0)
    }
    var j = 0
    while 2 * j + 1 < m { q[j] = code(vals[2 * j]) | code(vals[2 * j + 1]) << 4; j += 1 }
    if 2 * j < m { q[j] = code(vals[2 * j]) }
    if let f = feedback {
      for k in 0..<m {
        let c = (q[k >> 1] >> (4 * UInt8(k & 1))) & 0xF
        let v = scale * table[Int(c & 7)]
        f[k] = vals[k] - (c & 8 != 0 ? -v : v)
      }
    }
    return scale
  }

  @inline(__always)
  static func nibbleValues(_ kind: Nibble, scale: Float) -> [Float] {
    let t = kind.magnitudes
    return (0..<16).map { c in (c & 8 != 0 ? -1 : 1) * scale * t[c & 7] }
  }

  /// Σ v² over the 4-bit blocks `blocks` (each 4 + block/2 octets) of a payload body, or the first value index
  /// of a block whose scale is negative or not finite.
  public static func nibbleSquaredNorm(_ body: UnsafeRawPointer, kind: Nibble, blocks: Range<Int>, count: Int, block: Int) -> (Double, bad: Int?) {
    var acc = 0.0
    let t2 = kind.magnitudes.map { Double($0) * Double($0) }
    for b in blocks {
      let at = body + b * (4 + block / 2)
      let scale = Float(bitPattern: UInt32(littleEndian: at.loadUnaligned(as: UInt32.self)))
      guard scale.isFinite, scale >= 0 else { return (acc, b * block) }
      let q = (at + 4).assumingMemoryBound(to: UInt8.self)
      var s = 0.0
      for k in 0..<min(block, count - b * block) { s += t2[Int((q[k >> 1] >> (4 * UInt8(k & 1))) & 7)] }
      acc += Double(scale) * Double(scale) * s
    }
    return (acc, nil)
  }

  /// Decodes the 4-bit blocks `blocks` into `target` (`count` values in all) as `mode` says; `body` holds the
  /// blocks from block `first` on. Returns the first value index of a block with a bad scale (nothing of that
  /// block or after it is written).
  public static func nibbleApply(_ body: UnsafeRawPointer, kind: Nibble, first: Int = 0, blocks: Range<Int>, count: Int, block: Int,
                                 into target: UnsafeMutablePointer<Float>, mode: Apply) -> Int? {
    for b in blocks {
      let at = body + (b - first) * (4 + block / 2)
      let scale = Float(bitPattern: UInt32(littleEndian: at.loadUnaligned(as: UInt32.self)))
      guard scale.isFinite, scale >= 0 else { return b * block }
      let values = nibbleValues(kind, scale: scale)
      let q = (at + 4).assumingMemoryBound(to: UInt8.self)
      let t = target + b * block
      let m = min(block, count - b * block)
      values.withUnsafeBufferPointer { v in
        switch mode {
        case .store: for k in 0..<m { t[k] = v[Int((q[k >> 1] >> (4 * UInt8(k & 1))) & 0xF)] }
        case .subtract: for k in 0..<m { t[k] -= v[Int((q[k >> 1] >> (4 * UInt8(k & 1))) & 0xF)] }
        case .add(let w): for k in 0..<m { t[k] += w * v[Int((q[k >> 1] >> (4 * UInt8(k & 1))) & 0xF)] }
        }
      }
    }
    return nil
  }

  /// Σ x² (in Double) over the little-endian fp32 values `range` of a payload body, or the index of the
  /// first value that is not finite. Eight lanes at a time, each summing its own squares.
  public static func fp32SquaredNorm(_ body: UnsafeRawPointer, range: Range<Int>) -> (Double, bad: Int?) {
    var acc = SIMD8<Double>()
    var tail = 0.0
    var i = range.lowerBound
    while i < range.upperBound {
      let e = min(range.upperBound, i + 256)
      var worst = SIMD8<UInt32>()
      var k = i
      while k + 8 <= e {
        // A whole-vector load reads the octets in host order: little-endian, as the payload (x86-64, arm64).
        let bits = body.loadUnaligned(fromByteOffset: 4 * k, as: SIMD8<UInt32>.self)
        worst = pointwiseMax(worst, bits & 0x7FFF_FFFF)
        let f = unsafeBitCast(bits, to: SIMD8<Float>.self)
        let d = SIMD8<Double>(Double(f[0]), Double(f[1]), Double(f[2]), Double(f[3]), Double(f[4]), Double(f[5]), Double(f[6]), Double(f[7]))
        acc += d * d
        k += 8
      }
      var w = worst.max()
      while k < e {
        let bits = UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self))
        w = max(w, bits & 0x7FFF_FFFF)
        let x = Double(Float(bitPattern: bits))
        tail += x * x
        k += 1
      }
      if w >= 0x7F80_0000 {  // an infinity or a NaN somewhere in this run: find it
        for k in i..<e where !Float(bitPattern: UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self))).isFinite {
          return (acc.sum() + tail, k)
        }
      }
      i = e
    }
    return (acc.sum() + tail, nil)
  }

  /// Decodes the little-endian fp32 values `range` into `t` as `mode` says. Returns the
  /// index of the first value that is not finite (values before it in its 256-value run may be written).
  public static func fp32Apply(_ body: UnsafeRawPointer, range: Range<Int>, into t: UnsafeMutablePointer<Float>, mode: Apply) -> Int? {
    var i = range.lowerBound
    while i < range.upperBound {
      let e = min(range.upperBound, i + 256)
      var worst: UInt32 = 0
      for k in i..<e { worst = max(worst, UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self)) & 0x7FFF_FFFF) }
      if worst >= 0x7F80_0000 {
        for k in i..<e where !Float(bitPattern: UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self))).isFinite {
          return k
        }
      }
      switch mode {
      case .store: for k in i..<e { t[k] = Float(bitPattern: UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self))) }
      case .subtract: for k in i..<e { t[k] -= Float(bitPattern: UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self))) }
      case .add(let w): for k in i..<e { t[k] += w * Float(bitPattern: UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self))) }
      }
      i = e
    }
    return nil
  }
}
