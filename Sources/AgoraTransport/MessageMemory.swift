#if canImport(CMalloc)
import CMalloc
#endif
import Foundation

/// glibc's allocator settings for a process that streams megabyte messages through libzmq.
///
/// libzmq allocates each received 1 MiB message (and CurveZMQ each decrypted one) with `malloc`. glibc
/// serves such sizes with `mmap` until a freed mapping raises its threshold, and gives the top of a heap back
/// to the kernel once more than twice that threshold is free there. An Agora endpoint keeps up to `credit`
/// messages alive at once, handed from libzmq's I/O thread to the consumer's, and frees them in bursts: the
/// heap top is trimmed again and again and every new message faults its pages in afresh (measured: page
/// faults in the coordinator's libzmq I/O thread 3.8× those of a plain libzmq receiver of the same bytes).
/// Fixed thresholds keep message buffers in the heap for reuse: allocations under 4 MiB come from a heap, and
/// a heap's free top stays mapped up to the trim threshold. Larger buffers (models, staging areas) are
/// mapped as before.
///
/// The trim threshold is a trade: 16 MiB on a node (no free top ever returned while it streams), 4 MiB on a
/// coordinator, whose memory is budgeted per model (at 64 nodes, 16 MiB kept 9 MB more resident: 4.06× the
/// model against 3.89× with 4 MiB; BENCHMARKS.md).
public enum MessageMemory {
  public static let mmapThreshold: Int32 = 4 << 20
  public static let nodeTrimThreshold: Int32 = 16 << 20
  public static let coordinatorTrimThreshold: Int32 = 4 << 20

  private static let lock = NSLock()
  private nonisolated(unsafe) static var done = false
  private nonisolated(unsafe) static var inEffect = false

  /// Applies the settings once per process (the first endpoint decides: a coordinator's server endpoint,
  /// or a node's client). Returns whether they are in effect.
  @discardableResult
  public static func configure(coordinator: Bool) -> Bool {
    lock.lock()
    defer { lock.unlock() }
    if !done {
      done = true
      #if canImport(CMalloc) && os(Linux)
      inEffect = mallopt(M_MMAP_THRESHOLD, mmapThreshold) == 1
        && mallopt(M_TRIM_THRESHOLD, coordinator ? coordinatorTrimThreshold : nodeTrimThreshold) == 1
      #endif
    }
    return inEffect
  }
}
