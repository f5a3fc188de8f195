/// The per-value kernels of update and patch payloads (`DeltaCodec` in AgoraFederation holds the format:
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
    // The largest magnitude is taken over the bit patterns: an integer maximum vectorises, and a NaN (above
    // +inf) wins it.
    var top: UInt32 = 0
    if let f = feedback {
      for k in 0..<m { let v = x[k] + f[k]; vals[k] = v; top = max(top, v.bitPattern & 0x7FFF_FFFF) }
    } else {
      for k in 0..<m { let v = x[k]; vals[k] = v; top = max(top, v.bitPattern & 0x7FFF_FFFF) }
    }
    let scale = Float(bitPattern: top) / 127
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
