import Foundation

/// A file written front to back through 1 MiB aligned buffers with O_DIRECT: the data goes from those
/// buffers to the device, never through the page cache, which spares the kernel's copy and the cache's
/// bookkeeping for files nobody reads soon (a version's weights, the optimizer state: tens or hundreds of MB
/// every round) and leaves the cache to what is read. Where the file system refuses O_DIRECT (tmpfs, some
/// network file systems) it writes buffered instead. Full buffers are written in order by a thread of the
/// stream's own while the caller fills the next one, so producing the bytes and the
/// device's writes overlap; a failed write is thrown by a later `append` or by `finish`. `finish` pads the
/// last block, cuts the file back to its length and fsyncs it; until then the file is incomplete (write it
/// under a temporary name).
public final class DirectFileStream {
  /// Bytes per direct write, and the alignment O_DIRECT asks of buffers, offsets and lengths.
  static let block = 1 << 20, align = 4096
  /// Buffers per stream: one being filled, one being written (measured: more do not help the coordinator's
  /// step here, whose writes are bound by the device, and each costs a MiB of memory).
  static let depth = 2
  /// O_DIRECT (Glibc exports it only under _GNU_SOURCE, which Swift's import does not set).
  #if arch(x86_64)
  static let O_DIRECT: Int32 = 0o40000
  #elseif arch(arm64)
  static let O_DIRECT: Int32 = 0o200000
  #else
  static let O_DIRECT: Int32 = 0  // buffered elsewhere
  #endif

  public let path: String
  let fd: Int32
  let direct: Bool
  /// Every buffer of the stream, and the one being filled.
  let memory: PageMemory
  let buffers: [UnsafeMutableRawPointer]
  var buffer: UnsafeMutableRawPointer
  var filled = 0
  public private(set) var length = 0
  let observe: (UnsafeRawBufferPointer) -> Void
  var closed = false
  let writer: Writer

  /// The thread that writes full buffers in the order they are handed over and gives them back.
  final class Writer: @unchecked Sendable {
    let fd: Int32
    let path: String
    let cond = NSCondition()
    var queue: [(UnsafeMutableRawPointer, Int)] = []
    var free: [UnsafeMutableRawPointer]
    var stopping = false
    var error: StorageError? = nil

    init(fd: Int32, path: String, spare: [UnsafeMutableRawPointer]) {
      self.fd = fd
      self.path = path
      free = spare
      Thread { [self] in
        while true {
          cond.lock()
          while queue.isEmpty && !stopping { cond.wait() }
          guard let (p, n) = queue.first else { cond.unlock(); break }  // stopping, nothing left
          let failed = error != nil
          cond.unlock()
          let e = failed ? nil : Posix.write(fd, p, n, path: path)
          cond.lock()
          queue.removeFirst()
          free.append(p)
          if let e { error = e }
          cond.broadcast()
          cond.unlock()
        }
      }.start()
    }

    func submit(_ p: UnsafeMutableRawPointer, _ n: Int) {
      cond.lock()
      queue.append((p, n))
      cond.broadcast()
      cond.unlock()
    }

    /// A free buffer (waiting for a write to end if none is), or the failure of an earlier write.
    func take() throws -> UnsafeMutableRawPointer {
      cond.lock()
      defer { cond.unlock() }
      while free.isEmpty && error == nil { cond.wait() }
      if let error { throw error }
      return free.removeLast()
    }

    /// Waits until every buffer handed over is written, then ends the thread; returns the first failure.
    func stop() -> StorageError? {
      cond.lock()
      defer { cond.unlock() }
      while !queue.isEmpty { cond.wait() }
      stopping = true
      cond.broadcast()
      return error
    }
  }

  public init(path: String, observe: @escaping (UnsafeRawBufferPointer) -> Void = { _ in }) throws {
    self.path = path
    self.observe = observe
    var d = true
    var f = open(path, O_WRONLY | O_CREAT | O_TRUNC | DirectFileStream.O_DIRECT | O_CLOEXEC, 0o644)
    if f < 0 && errno == EINVAL {
      d = false
      f = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    }
    guard f >= 0 else { throw StorageError.errno(path, "cannot be created") }
    fd = f
    direct = d
    guard let m = PageMemory(bytes: DirectFileStream.depth * DirectFileStream.block) else {
      close(f)
      throw StorageError(path: path, problem: "no memory for its write buffers")
    }
    memory = m
    buffers = (0..<DirectFileStream.depth).map { m.pointer + $0 * DirectFileStream.block }
    buffer = buffers[0]
    writer = Writer(fd: f, path: path, spare: Array(buffers.dropFirst()))
  }

  deinit {
    if !closed {
      _ = writer.stop()
      close(fd)
    }
  }

  public func append(_ bytes: UnsafeRawBufferPointer) throws {
    var off = 0
    while off < bytes.count {
      let n = min(DirectFileStream.block - filled, bytes.count - off)
      buffer.advanced(by: filled).copyMemory(from: bytes.baseAddress!.advanced(by: off), byteCount: n)
      filled += n
      off += n
      if filled == DirectFileStream.block { try handOver() }
    }
    length += bytes.count
  }

  /// Gives the full buffer to the writer and goes on with a free one.
  func handOver() throws {
    observe(UnsafeRawBufferPointer(start: buffer, count: filled))
    writer.submit(buffer, filled)
    filled = 0
    buffer = try writer.take()
  }

  /// Writes what is buffered, sets the file's length and fsyncs it; the stream is closed afterwards.
  public func finish() throws {
    guard !closed else { return }
    closed = true
    defer { close(fd) }
    if let e = writer.stop() { throw e }
    if filled > 0 {
      observe(UnsafeRawBufferPointer(start: buffer, count: filled))
      // The last block is padded to the alignment and the file cut back to its length below.
      let a = DirectFileStream.align
      let n = direct ? (filled + a - 1) / a * a : filled
      if n > filled { buffer.advanced(by: filled).initializeMemory(as: UInt8.self, repeating: 0, count: n - filled) }
      if let e = Posix.write(fd, buffer, n, path: path) { throw e }
      filled = 0
    }
    guard ftruncate(fd, off_t(length)) == 0, fsync(fd) == 0 else {
      throw StorageError.errno(path, "cannot be finished (truncate or fsync)")
    }
  }
}

