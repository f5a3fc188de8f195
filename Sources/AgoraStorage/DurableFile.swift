import Foundation

/// Durable placement of finished files: rename into place, fsync of the directory; reads that warm the page
/// cache; names for files being written.
public enum DurableFile {
  /// Renames a finished file to `path`, or removes it when that file exists (content-addressed files: the same
  /// name is the same content).
  public static func place(_ tmp: String, as path: String) throws {
    if FileManager.default.fileExists(atPath: path) { unlink(tmp); return }
    try publish(tmp, as: path)
  }

  /// Reads `count` octets of `path` from `offset` on a thread of its own and throws them away, so that the
  /// page cache holds them when they are read for real (`posix_fadvise(WILLNEED)` measured no faster than a
  /// cold read here). Failures are ignored: the real read reports them.
  public static func warm(_ path: String, offset: Int, count: Int) {
    Thread {
      let fd = open(path, O_RDONLY | O_CLOEXEC)
      guard fd >= 0, let buffer = PageMemory(bytes: 1 << 22) else { return }
      defer { close(fd) }
      var done = 0
      while done < count {
        let r = Posix.retrying { pread(fd, buffer.pointer, min(1 << 22, count - done), off_t(offset + done)) }
        guard r > 0 else { return }
        done += r
      }
    }.start()
  }

  /// A name in `dir` for a file being written (`removeTemporaryFiles` matches ".tmp-").
  public static func temporaryPath(in dir: String, _ what: String) -> String {
    dir + "/\(what).tmp-\(getpid())-\(UUID().uuidString.prefix(8))"
  }

  /// Renames a finished (fsynced) temporary file into place and fsyncs the directory.
  public static func publish(_ tmp: String, as path: String) throws {
    guard rename(tmp, path) == 0 else {
      unlink(tmp)
      throw StorageError.errno(tmp, "cannot be renamed to \(path)")
    }
    let dir = (path as NSString).deletingLastPathComponent
    let fd = open(dir.isEmpty ? "." : dir, O_RDONLY)
    if fd >= 0 { fsync(fd); close(fd) }
  }
}

/// Crash-safe file replacement: write to `path.tmp-PID`, fsync, rename over `path`, fsync the directory.
public enum AtomicFile {
  public static func write(to path: String, _ body: (FileHandle) throws -> Void) throws {
    let tmp = path + ".tmp-\(getpid())"
    guard FileManager.default.createFile(atPath: tmp, contents: nil) else {
      throw StorageError(path: path, problem: "cannot create temporary file \(tmp)")
    }
    do {
      let h = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp))
      defer { try? h.close() }
      try body(h)
      try h.synchronize()
    } catch {
      try? FileManager.default.removeItem(atPath: tmp)
      throw StorageError(path: path, problem: "write failed: \(error)")
    }
    guard rename(tmp, path) == 0 else {
      try? FileManager.default.removeItem(atPath: tmp)
      throw StorageError.errno(path, "cannot be renamed into place")
    }
    let dir = (path as NSString).deletingLastPathComponent
    let fd = open(dir.isEmpty ? "." : dir, O_RDONLY)
    if fd >= 0 { fsync(fd); close(fd) }
  }

  /// `createDirectory`: make the file's directory first if it is missing (nothing to make for a bare file name,
  /// which is in the working directory).
  public static func write(_ data: Data, to path: String, createDirectory: Bool = false) throws {
    let dir = (path as NSString).deletingLastPathComponent
    if createDirectory && !dir.isEmpty {
      do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
        throw StorageError(path: path, problem: "cannot create its directory \(dir): \(error.localizedDescription)")
      }
    }
    try write(to: path) { try $0.write(contentsOf: data) }
  }
}
