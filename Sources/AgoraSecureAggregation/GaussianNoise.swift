import AgoraCrypto
import Foundation

/// Gaussian noise for differential privacy, from a cryptographic generator: uniform words from AES-256-CTR
/// under a fresh random key (`MaskStream`), turned into normal deviates by the Box–Muller transform (two per
/// pair of 32-bit words, in binary64 before rounding to binary32). Floating-point sampling is known to leak
/// through the low bits of its results (Mironov 2012); the federation's noise is added to values that are
/// then quantised (int8 or the ring), which hides much but not provably all of it.
public enum GaussianNoise {
  /// values[i] += N(0, sigma²), independently.
  public static func add(sigma: Double, to values: UnsafeMutableBufferPointer<Float>, threads: Int = 1) throws {
    guard sigma > 0, values.count > 0 else { return }
    let n = values.count, pairs = (n + 1) / 2
    let words = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: 2 * pairs)
    defer { words.deallocate() }
    words.initialize(repeating: 0)
    try MaskStream(threads: threads).apply(seed: Sodium.randomBytes(32), to: words)
    for p in 0..<pairs {
      // u1 in (0, 1], u2 in [0, 1).
      let u1 = (Double(words[2 * p]) + 1) / 4_294_967_296, u2 = Double(words[2 * p + 1]) / 4_294_967_296
      let r = (-2 * log(u1)).squareRoot() * sigma, t = 2 * Double.pi * u2
      values[2 * p] += Float(r * cos(t))
      if 2 * p + 1 < n { values[2 * p + 1] += Float(r * sin(t)) }
    }
  }
}
