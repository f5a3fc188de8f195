import AgoraRegistry
import AgoraStorage
import AgoraTensor
import Foundation

/// The outer optimizer's momentum m kept on disk between rounds instead of in memory: the coordinator
/// then holds two model-sized buffers (θ and the running sum of Δ), not three, whatever the number of nodes.
///
/// `step` runs the optimizer over the mean Δ in slices of 4 MiB: each slice of the previous m is read from
/// the previous version's optimizer blob (zeros at version 0), updated together with that slice of Δ (which
/// becomes the step u), and appended to a new file written with O_DIRECT. The blob's layout is that of the
/// in-memory optimizer's state, m ‖ v (FedAdam's v stays in memory and is appended after m), so a registry
/// written either way reads back the same. The new file is a temporary one; the background persist hashes
/// it and makes it a blob before the version is committed.
package enum MomentumStream {
  package static let sliceFloats = 1 << 20

  /// Runs `outer` over `delta` (turned into u in place). `previous` is the last version's optimizer blob (nil:
  /// m = 0); the new state goes to `out`. `onSlice` is called with each range of `delta` as soon as it holds
  /// u (in order), so the caller can apply the step slice by slice while the rest is still being computed;
  /// `threads` bounds the threads the update uses. Returns the bytes written.
  @discardableResult
  package static func step(outer: OuterOptimizer, delta: FloatBuffer, previous: String?, out: String, threads: Int = Parallel.threads,
                   onSlice: (Range<Int>) throws -> Void = { _ in }) throws -> Int {
    let count = delta.count
    let file = try DirectFileStream(path: out)
    let slice = FloatBuffer(count: min(count, sliceFloats))
    var fd: Int32 = -1
    if let previous {
      fd = open(previous, O_RDONLY | O_CLOEXEC)
      guard fd >= 0 else { throw StorageError.errno(previous, "the optimizer state cannot be read") }
    }
    defer {
      if fd >= 0 {
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)  // read once: leave the page cache to others
        close(fd)
      }
    }
    var offset = 0
    while offset < count {
      let n = min(sliceFloats, count - offset)
      if fd >= 0, let previous {
        try Posix.read(fd, path: previous, at: offset * 4, into: UnsafeMutableRawBufferPointer(start: slice.pointer, count: n * 4))
      } else {
        slice.pointer.initialize(repeating: 0, count: n)
      }
      let (d, m) = (delta.pointer + offset, slice.pointer)
      let o = offset
      Parallel.forRange(n, minChunk: 65536, threads: threads) { s, e in outer.step(slice: d + s, m: m + s, offset: o + s, count: e - s) }
      try onSlice(offset..<(offset + n))
      try file.append(UnsafeRawBufferPointer(start: slice.pointer, count: n * 4))
      offset += n
    }
    if outer.kind == .fedadam { try file.append(UnsafeRawBufferPointer(start: outer.v.pointer, count: outer.v.count * 4)) }
    try file.finish()
    return file.length
  }
}
