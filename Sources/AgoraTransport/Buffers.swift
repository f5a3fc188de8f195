import AgoraWire
import Foundation

/// Send buffers for sealed chunks, kept for reuse: a megabyte chunk is sealed straight into one, handed to
/// libzmq without a copy (`Payload(buffer)`), and comes back here when both the sender's window (after the
/// acknowledgement) and libzmq (after writing it out) have let go of it. Reuse spares the page faults of
/// fresh memory for every chunk; at most `keep` buffers per size are kept.
public final class BufferPool: @unchecked Sendable {
  private let lock = NSLock()
  private var free: [Int: [UnsafeMutableRawPointer]] = [:]
  public let keep: Int

  public init(keep: Int = 12) { self.keep = keep }

  deinit {
    for (_, list) in free { for p in list { p.deallocate() } }
  }

  /// A buffer of exactly `size` bytes (contents undefined).
  public func take(_ size: Int) -> PooledBuffer {
    lock.lock()
    let p = free[size]?.popLast()
    lock.unlock()
    return PooledBuffer(pool: self, pointer: p ?? .allocate(byteCount: max(size, 1), alignment: 64), count: size)
  }

  fileprivate func give(_ p: UnsafeMutableRawPointer, size: Int) {
    lock.lock()
    defer { lock.unlock() }
    if free[size, default: []].count < keep { free[size, default: []].append(p) } else { p.deallocate() }
  }

  /// Buffers waiting for reuse (for tests).
  public var idle: Int {
    lock.lock()
    defer { lock.unlock() }
    return free.values.reduce(0) { $0 + $1.count }
  }
}

/// One buffer of a `BufferPool`. Write it (`mutableBytes`) before sharing it as a payload; after that its
/// bytes are read-only until the last reference goes and it returns to the pool.
public final class PooledBuffer: PayloadStorage, @unchecked Sendable {
  let pool: BufferPool
  let pointer: UnsafeMutableRawPointer
  let count: Int

  init(pool: BufferPool, pointer: UnsafeMutableRawPointer, count: Int) {
    self.pool = pool
    self.pointer = pointer
    self.count = count
  }

  deinit { pool.give(pointer, size: count) }

  public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: count) }
  public var mutableBytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: pointer, count: count) }
}
