import Foundation

/// Anonymous memory mapped from the kernel and unmapped when released: page-aligned (as O_DIRECT wants)
/// and, unlike malloc'd blocks of this size, never left behind in the arena of one of the short-lived
/// threads that use it (the coordinator's persist and writer threads run every round; with malloc its
/// resident memory crept up by tens of MB over a dozen rounds).
public final class PageMemory {
  public let pointer: UnsafeMutableRawPointer
  public let bytes: Int

  public init?(bytes: Int) {
    guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else { return nil }
    pointer = p
    self.bytes = bytes
  }

  deinit { munmap(pointer, bytes) }
}
