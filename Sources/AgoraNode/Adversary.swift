import AgoraRounds
import AgoraModel
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
  /// In round 2, once its shares are exchanged (secure aggregation) and it trains, the process kills itself
  /// (SIGKILL): a node that dies between the share exchange and its masked update.
  case vanish
  /// Honest on its own languages plus gradient ascent on a language it does not hold (`TargetedAttack`).
  case targeted

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
      var g = SplitMix64(seed: seed)
      var noise2 = 0.0
      for i in 0..<n { d[i] = Float(g.nextGaussian()) }
      for i in 0..<n { noise2 += Double(d[i]) * Double(d[i]) }
      let s = Float((norm2 / max(noise2, 1e-300)).squareRoot())
      for i in 0..<n { d[i] *= s }
    case .replay, .stalebase, .partial, .vanish, .targeted: break
    }
  }
}
