/// Vectorised transcendental functions for the trainer's kernels.
///
/// libm's `expf`/`tanhf` are scalar; the trainer evaluates tens of millions of them per step
/// (softmax over the vocabulary and over attention rows, GELU), so they are computed here on
/// 16 lanes with the Cephes `expf` reduction and polynomial (max relative error about 2 ulp
/// over the clamped range). `VectorMath.exp` on a scalar is the reference twin used by the tests.
public typealias Vec = SIMD16<Float>

public enum VectorMath {
  @usableFromInline static var log2e: Float { 1.44269504088896341 }
  @usableFromInline static var c1: Float { 0.693359375 }
  @usableFromInline static var c2: Float { -2.12194440e-4 }
  /// 1.5·2²³: adding it rounds a float to an integer held in the low mantissa bits.
  @usableFromInline static var magic: Float { 12582912 }

  /// e^x on 16 lanes. Inputs are clamped to [-87.3, 88.3]; below that the result is ~0.
  @inlinable @inline(__always)
  public static func exp(_ x0: Vec) -> Vec {
    var x = x0.replacing(with: -87.3, where: x0 .< -87.3)
    x.replace(with: 88.3, where: x .> 88.3)
    let t = x * log2e + magic
    let n = t - magic
    var r = x - n * c1
    r = r - n * c2
    var y = Vec(repeating: 1.9875691500e-4)
    y = y * r + 1.3981999507e-3
    y = y * r + 8.3334519073e-3
    y = y * r + 4.1665795894e-2
    y = y * r + 1.6666665459e-1
    y = y * r + 5.0000001201e-1
    y = y * (r * r) + r + 1
    // t's bit pattern is magic's plus n: the integer exponent without a float→int conversion.
    let bits = (unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    return y * unsafeBitCast(bits, to: Vec.self)
  }

  /// e^x for one value, with the same algorithm as the 16-lane version.
  @inlinable @inline(__always)
  public static func exp(_ x: Float) -> Float { exp(Vec(repeating: x))[0] }

  /// tanh on 16 lanes through `exp`: tanh(u) = 1 - 2 / (e^{2u} + 1).
  @inlinable @inline(__always)
  public static func tanh(_ u: Vec) -> Vec {
    1 - 2 / (exp(2 * u) + 1)
  }

  /// Sum of `n` floats, 16 lanes at a time (the tail is added in order).
  @inlinable @inline(__always)
  public static func sum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = Vec()
    var i = 0
    while i + 16 <= n {
      acc += UnsafeRawPointer(p + i).loadUnaligned(as: Vec.self)
      i += 16
    }
    var s = acc.sum()
    while i < n { s += p[i]; i += 1 }
    return s
  }

  /// Loads 16 floats from `p` (no alignment needed).
  @inlinable @inline(__always)
  public static func load(_ p: UnsafePointer<Float>) -> Vec {
    UnsafeRawPointer(p).loadUnaligned(as: Vec.self)
  }

  /// Stores 16 floats at `p` (no alignment needed).
  @inlinable @inline(__always)
  public static func store(_ v: Vec, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec.self)
  }
}
