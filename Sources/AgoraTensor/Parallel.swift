import Dispatch
import Foundation

/// Data-parallel loops over the machine's cores.
///
/// Every kernel of the trainer splits its rows into `Parallel.threads` contiguous chunks, one per thread,
/// in a fixed way: the same inputs and thread count always give bit-identical results.
public enum Parallel {
  /// How many threads the kernels use. Defaults to the number of active processors.
  nonisolated(unsafe) public static var threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

  /// Calls `body(start, end)` on disjoint chunks covering `0..<count`, in parallel.
  ///
  /// - Parameters:
  ///   - minChunk: below `2 * minChunk` items the loop runs on the calling thread.
  ///   - threads: at most this many threads (1: the calling thread only, for callers that keep the other
  ///     cores busy with work of their own).
  @inlinable @inline(__always)
  public static func forRange(_ count: Int, minChunk: Int = 1, threads: Int = Parallel.threads, _ body: (Int, Int) -> Void) {
    let n = min(threads, max(1, count / max(1, minChunk)))
    if n <= 1 {
      if count > 0 { body(0, count) }
      return
    }
    DispatchQueue.concurrentPerform(iterations: n) { i in
      let start = count * i / n
      let end = count * (i + 1) / n
      if end > start { body(start, end) }
    }
  }

  /// Runs `body(i)` for every `i` in `0..<count`, spread over the threads in contiguous blocks.
  @inlinable @inline(__always)
  public static func forEach(_ count: Int, _ body: (Int) -> Void) {
    forRange(count) { s, e in
      for i in s..<e { body(i) }
    }
  }

  /// Calls `body(chunk, start, end)` for `chunks` fixed contiguous partitions of `0..<count`, in parallel.
  ///
  /// The chunk index lets a caller use per-thread scratch or partial sums that it then reduces in a fixed
  /// order, which keeps reductions deterministic.
  @inlinable @inline(__always)
  public static func forChunks(_ count: Int, chunks: Int = Parallel.threads, _ body: (Int, Int, Int) -> Void) {
    let n = max(1, min(chunks, count))
    if n == 1 {
      if count > 0 { body(0, 0, count) }
      return
    }
    DispatchQueue.concurrentPerform(iterations: n) { i in
      let start = count * i / n
      let end = count * (i + 1) / n
      if end > start { body(i, start, end) }
    }
  }

  /// The index of the chunk for chunked reductions: `chunks` fixed partitions of `count` items.
  public static func chunkBounds(_ count: Int, chunk i: Int, of chunks: Int) -> Range<Int> {
    (count * i / chunks)..<(count * (i + 1) / chunks)
  }
}
