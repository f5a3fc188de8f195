/// A small deterministic random number generator (SplitMix64), so that initialisation and batch
/// sampling depend only on the seed and step, never on the platform or on global state.
public struct SplitMix64: RandomNumberGenerator, Sendable {
  public var state: UInt64
  public init(seed: UInt64) { state = seed }

  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// Uniform in [0, 1).
  public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1p-53 }

  /// Standard normal (Box–Muller).
  public mutating func nextGaussian() -> Double {
    let u1 = max(nextUnit(), 1e-300), u2 = nextUnit()
    return (-2 * _logD(u1)).squareRoot() * _cosD(2 * Double.pi * u2)
  }

  /// The index whose share of the cumulative `weights` (summing to 1) holds `u` in [0, 1); the last index when
  /// rounding leaves `u` past the sum. A mixture sampler's choice of language.
  public static func pick(_ weights: [Double], at u: Double) -> Int {
    var acc = 0.0
    for (i, w) in weights.enumerated() {
      acc += w
      if u < acc { return i }
    }
    return weights.count - 1
  }

  /// A generator for a derived stream, e.g. `(seed, step)`.
  public static func derived(_ seed: UInt64, _ salt: UInt64) -> SplitMix64 {
    var g = SplitMix64(seed: seed ^ (salt &* 0xD1B5_4A32_D192_ED03))
    _ = g.next()
    return g
  }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _logD(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) func _cosD(_ x: Double) -> Double { Glibc.cos(x) }
#else
import Foundation
@inline(__always) func _logD(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) func _cosD(_ x: Double) -> Double { Foundation.cos(x) }
#endif
