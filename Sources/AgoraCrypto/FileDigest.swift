import AgoraStorage
import Foundation

extension Sodium {
  /// BLAKE2b-256 of an open file's contents from its first octet (read with pread, 4 MiB at a time, whatever the
  /// file position), and how many octets that was; nil on a read error. The content hash of registry blobs,
  /// version patches and public shards.
  public static func blake2b(fd: Int32) -> (hash: [UInt8], bytes: Int)? {
    let n = 1 << 22
    guard let buffer = PageMemory(bytes: n) else { return nil }
    let hasher = Hasher()
    var done = 0
    while true {
      let got = Posix.retrying { pread(fd, buffer.pointer, n, off_t(done)) }
      guard got >= 0 else { return nil }
      if got == 0 { break }
      hasher.update(UnsafeRawBufferPointer(start: buffer.pointer, count: got))
      done += got
    }
    return (hasher.finish(), done)
  }

  /// `blake2b(fd:)` of the file at `path`; nil if it cannot be opened or read.
  public static func blake2b(file path: String) -> (hash: [UInt8], bytes: Int)? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return blake2b(fd: fd)
  }
}
