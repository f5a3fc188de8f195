import Foundation

/// Why a file could not be read or written: the file and what went wrong (with the system's words).
public struct StorageError: Error, Equatable, CustomStringConvertible {
  public var path: String
  public var problem: String
  public init(path: String, problem: String) {
    self.path = path
    self.problem = problem
  }
  public var description: String { "\(path): \(problem)" }

  /// The error of the system call that just failed on `path`: `what` ("cannot be read") and errno's text.
  public static func errno(_ path: String, _ what: String) -> StorageError {
    StorageError(path: path, problem: "\(what): \(String(cString: strerror(Glibc.errno)))")
  }
}

/// The one place POSIX calls are retried: a call interrupted by a signal (EINTR) is made again, any other
/// failure is returned as it is (with errno set).
public enum Posix {
  @inline(__always)
  public static func retrying<T: BinaryInteger>(_ call: () -> T) -> T {
    while true {
      let r = call()
      if r < 0 && Glibc.errno == EINTR { continue }
      return r
    }
  }

  /// Reads exactly `out.count` bytes of `fd` from `offset` (short reads and EINTR retried); a file that ends
  /// sooner, or a read error, is a `StorageError` naming `path`.
  public static func read(_ fd: Int32, path: String, at offset: Int, into out: UnsafeMutableRawBufferPointer) throws {
    var got = 0
    while got < out.count {
      let r = retrying { pread(fd, out.baseAddress! + got, out.count - got, off_t(offset + got)) }
      guard r >= 0 else { throw StorageError.errno(path, "cannot be read") }
      guard r > 0 else { throw StorageError(path: path, problem: "ends at byte \(offset + got), expected \(offset + out.count)") }
      got += r
    }
  }

  /// Writes `n` bytes at `p` to `fd` (short writes and EINTR retried); nil on success.
  public static func write(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int, path: String) -> StorageError? {
    var done = 0
    while done < n {
      let w = retrying { Glibc.write(fd, p.advanced(by: done), n - done) }
      guard w > 0 else { return StorageError.errno(path, "cannot be written") }
      done += w
    }
    return nil
  }
}
