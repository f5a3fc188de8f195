import AgoraCrypto

/// Shamir's secret sharing over GF(2^8) (the AES field, x^8 + x^4 + x^3 + x + 1), octet by octet: a secret of
/// any length is split into shares of the same length at distinct nonzero points x; any `threshold` of them
/// give it back, fewer give no information about it. Points are a party's place in the round's roster + 1, so
/// a round has at most 255 parties. Field arithmetic is branch-free on secret values (shift-and-add
/// multiplication, inversion by exponentiation).
public enum Shamir {
  public struct Share: Equatable, Sendable {
    public var x: UInt8
    public var bytes: [UInt8]
    public init(x: UInt8, bytes: [UInt8]) {
      self.x = x
      self.bytes = bytes
    }
  }

  public enum Failure: Error, Equatable, CustomStringConvertible {
    case threshold(Int, points: Int)
    case point(UInt8)
    case duplicatePoint(UInt8)
    case tooFew(got: Int, threshold: Int)
    case lengths
    public var description: String {
      switch self {
      case .threshold(let t, let n): return "a threshold of \(t) cannot be met by \(n) points (1 ≤ threshold ≤ points)"
      case .point(let x): return "share point \(x) is not a nonzero field element"
      case .duplicatePoint(let x): return "two shares at point \(x)"
      case .tooFew(let got, let t): return "\(got) shares, \(t) needed"
      case .lengths: return "shares of different lengths"
      }
    }
  }

  /// a · b in GF(2^8).
  @inline(__always) static func mul(_ a: UInt8, _ b: UInt8) -> UInt8 {
    var a = a, b = b, p: UInt8 = 0
    for _ in 0..<8 {
      p ^= a & (0 &- (b & 1))
      let carry = 0 &- (a >> 7)
      a = (a << 1) ^ (0x1B & carry)
      b >>= 1
    }
    return p
  }

  /// a^-1 in GF(2^8) (a^254; 0 for 0).
  static func inverse(_ a: UInt8) -> UInt8 {
    var result: UInt8 = 1, base = a, e = 254
    while e > 0 {
      if e & 1 == 1 { result = mul(result, base) }
      base = mul(base, base)
      e >>= 1
    }
    return result
  }

  /// Shares of `secret` at `points` (distinct, nonzero), any `threshold` of which reconstruct it. `random`
  /// supplies the polynomials' coefficients (libsodium's generator; a test may pass its own).
  public static func split(_ secret: [UInt8], threshold: Int, points: [UInt8],
                           random: (Int) -> [UInt8] = Sodium.randomBytes) throws -> [Share] {
    guard threshold >= 1, threshold <= points.count else { throw Failure.threshold(threshold, points: points.count) }
    var seen = Set<UInt8>()
    for x in points {
      guard x != 0 else { throw Failure.point(x) }
      guard seen.insert(x).inserted else { throw Failure.duplicatePoint(x) }
    }
    // coefficients[j][i]: the x^(j+1) coefficient of octet i's polynomial.
    var coefficients = (1..<threshold).map { _ in random(secret.count) }
    defer { for j in coefficients.indices { Sodium.wipe(&coefficients[j]) } }
    return points.map { x in
      var out = secret
      var power: UInt8 = 1
      for c in coefficients {
        power = mul(power, x)
        for i in out.indices { out[i] ^= mul(c[i], power) }
      }
      return Share(x: x, bytes: out)
    }
  }

  /// The secret from at least `threshold` shares (Lagrange interpolation at 0 over the first `threshold`).
  public static func combine(_ shares: [Share], threshold: Int) throws -> [UInt8] {
    guard threshold >= 1 else { throw Failure.threshold(threshold, points: shares.count) }
    guard shares.count >= threshold else { throw Failure.tooFew(got: shares.count, threshold: threshold) }
    let use = Array(shares.prefix(threshold))
    guard let n = use.first?.bytes.count, use.allSatisfy({ $0.bytes.count == n }) else { throw Failure.lengths }
    var seen = Set<UInt8>()
    for s in use {
      guard s.x != 0 else { throw Failure.point(s.x) }
      guard seen.insert(s.x).inserted else { throw Failure.duplicatePoint(s.x) }
    }
    var secret = [UInt8](repeating: 0, count: n)
    for (j, sj) in use.enumerated() {
      // λ_j = Π_{m≠j} x_m / (x_m − x_j); subtraction is addition (xor) in GF(2^8).
      var num: UInt8 = 1, den: UInt8 = 1
      for (m, sm) in use.enumerated() where m != j {
        num = mul(num, sm.x)
        den = mul(den, sm.x ^ sj.x)
      }
      let lambda = mul(num, inverse(den))
      for i in 0..<n { secret[i] ^= mul(sj.bytes[i], lambda) }
    }
    return secret
  }
}
