import AgoraRounds
import Foundation

/// Fault injection for the crash-safety tests: `AGORA_FAULT=<point>@<round>` makes the coordinator kill itself
/// with SIGKILL at that point of that round (before-step, after-step, mid-write, after-commit), or, with
/// `corrupt-blob@<round>`, damage one octet of its current version's blob on disk as that round begins (as a
/// failing disk would; `damage`). Unset in normal use; it changes nothing else.
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

  /// At `corrupt-blob@round`: flips the octet in the middle of the file at `path` in place.
  static func damage(_ path: String, round: Int) {
    guard let f = armed, f.point == "corrupt-blob", f.round == round else { return }
    let fd = open(path, O_RDWR)
    guard fd >= 0 else { return }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, st.st_size > 0 else { return }
    let at = off_t(st.st_size / 2)
    var b: UInt8 = 0
    guard pread(fd, &b, 1, at) == 1 else { return }
    b ^= 0xFF
    _ = pwrite(fd, &b, 1, at)
    FileHandle.standardError.write(Data("  fault injection: one octet of \(path) changed as round \(round) begins\n".utf8))
  }
}
