import AgoraTensor
import Foundation

/// Misbehaviours of an enrolled node, for robustness tests and the Byzantine experiment only: the node trains
/// honestly, then sends something else. Chosen per node name by the environment variable
/// `AGORA_ADVERSARY=name:kind,name:kind` (like `AGORA_FAULT`, unset in normal use; nothing else reads it).
public enum Adversary: String, CaseIterable, Sendable {
  /// Δ × 100.
  case scaled
  /// −Δ.
  case signflip
  /// Gaussian noise with the honest update's norm.
  case noise
  /// Δ = 0.
  case zeros
  /// The honest update, then the same update again under another transfer id.
  case replay
  /// The honest update sealed for the previous round's base (a stale version).
  case stalebase
  /// Every chunk of the honest update, but never UPLOAD_END (the node keeps its session alive).
  case partial

  /// This node's misbehaviour, if the environment names one for `node`.
  public static func from(environment env: [String: String] = ProcessInfo.processInfo.environment, node: String) -> Adversary? {
    guard let spec = env["AGORA_ADVERSARY"] else { return nil }
    for part in spec.split(separator: ",") {
      let kv = part.split(separator: ":", maxSplits: 1).map(String.init)
      if kv.count == 2, kv[0] == node { return Adversary(rawValue: kv[1]) }
    }
    return nil
  }

  /// Turns the honest Δ into what this adversary sends (in place).
  public func corrupt(_ delta: FloatBuffer, seed: UInt64) {
    let d = delta.pointer, n = delta.count
    switch self {
    case .scaled: for i in 0..<n { d[i] *= 100 }
    case .signflip: for i in 0..<n { d[i] = -d[i] }
    case .zeros: delta.zero()
    case .noise:
      var norm2 = 0.0
      for i in 0..<n { norm2 += Double(d[i]) * Double(d[i]) }
      var g = SplitMix(seed)
      var noise2 = 0.0
      for i in stride(from: 0, to: n, by: 2) {
        // Box–Muller: two normal values from two uniform ones.
        let u1 = max(g.unit(), 1e-300), u2 = g.unit()
        let r = (-2 * log(u1)).squareRoot()
        d[i] = Float(r * cos(2 * .pi * u2))
        if i + 1 < n { d[i + 1] = Float(r * sin(2 * .pi * u2)) }
      }
      for i in 0..<n { noise2 += Double(d[i]) * Double(d[i]) }
      let s = Float((norm2 / max(noise2, 1e-300)).squareRoot())
      for i in 0..<n { d[i] *= s }
    case .replay, .stalebase, .partial: break
    }
  }
}

/// A small, seeded generator (SplitMix64) for the adversary's noise.
struct SplitMix {
  var state: UInt64
  init(_ seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
  mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
