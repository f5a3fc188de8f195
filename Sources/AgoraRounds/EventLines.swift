import Foundation

/// A file of events as JSON lines, appended to (`agora coordinator --events`, `agora node --events`): each line
/// is written whole with one `write` (O_APPEND), so a reader never sees half a line.
public final class EventLines: @unchecked Sendable {
  private let fd: Int32
  private let lock = NSLock()

  /// Opens (creates) `path` for appending; a file that cannot be opened is an error before anything runs.
  public init(path: String) throws {
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw ConfigError(file: path, key: "--events", problem: "cannot open for appending: \(String(cString: strerror(errno)))") }
  }
  deinit { close(fd) }

  /// Appends `line` (one JSON object, no newline).
  public func append(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    lock.lock(); defer { lock.unlock() }
    _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
  }
}
