import AgoraDigest

/// The update envelope's payload digest (envelope version 3, `Protocol/SPEC.md` §6): SHA-256 over the
/// digests of the payload's chunks, where each chunk's digest hashes its two halves separately:
///
///     lane size s   = 64 · ⌈n / 128⌉   for a chunk of n bytes (half the chunk, rounded up to whole blocks)
///     chunk digest  = SHA-256( n as u64 little-endian ‖ SHA-256(chunk[0 ..< min(s, n)]) ‖ SHA-256(chunk[s ..< n]) )
///     payload digest = SHA-256( chunk digest 0 ‖ chunk digest 1 ‖ … )
///
/// Two independent SHA-256 streams per chunk run interleaved with the SHA extensions (`SHA256Lanes`), at
/// 1.5–1.8× the speed of one stream, and both ends of every update compute this digest. Collision
/// resistance is SHA-256's: a collision of the payload digest gives one of SHA-256 at some level of the
/// tree (every length is fixed by the chunk size and the envelope head). Where the CPU lacks the SHA
/// extensions the same digests come from OpenSSL, one lane after the other.
public final class PayloadDigest {
  let outer = SHA256()
  let inner = SHA256()

  public init() {}

  /// The digest of one chunk (any length, 0 included).
  public func chunkDigest(_ chunk: UnsafeRawBufferPointer) -> [UInt8] {
    let n = chunk.count
    let s = min(n, 64 * ((n + 127) / 128))
    let first = UnsafeRawBufferPointer(rebasing: chunk[0..<s]), second = UnsafeRawBufferPointer(rebasing: chunk[s..<n])
    let (a, b) = SHA256Lanes.hash(first, second) ?? (SHA256.hash(first), SHA256.hash(second))
    var length = [UInt8](repeating: 0, count: 8)
    for i in 0..<8 { length[i] = UInt8(truncatingIfNeeded: UInt64(n) >> (8 * UInt64(i))) }
    inner.update(length)
    inner.update(a)
    inner.update(b)
    return inner.finish()
  }

  /// Adds the next chunk of the payload.
  public func update(_ chunk: UnsafeRawBufferPointer) { outer.update(chunkDigest(chunk)) }

  /// The payload digest; the object starts over afterwards.
  public func finish() -> [UInt8] { outer.finish() }
}
