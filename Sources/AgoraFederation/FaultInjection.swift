import Foundation

/// Fault injection for the crash-safety tests: `AGORA_FAULT=<point>@<round>` makes the coordinator kill itself
/// with SIGKILL at that point of that round (before-step, after-step, mid-write, after-commit). Unset in
/// normal use; it changes nothing else.
enum FaultInjection {
  static let armed: (point: String, round: Int)? = {
    guard let s = ProcessInfo.processInfo.environment["AGORA_FAULT"], let at = s.firstIndex(of: "@"), let r = Int(s[s.index(after: at)...]) else { return nil }
    return (String(s[..<at]), r)
  }()

  static func at(_ point: String, round: Int) {
    if let f = armed, f.point == point, f.round == round {
      FileHandle.standardError.write(Data("  fault injection: SIGKILL at \(point) of round \(round)\n".utf8))
      kill(getpid(), SIGKILL)
    }
  }
}
