import AgoraDigest

/// The update envelope's payload digest (envelope version 4, `Protocol/SPEC.md` §6): BLAKE3 (hash mode,
/// 32 octets) of the whole payload, fed chunk by chunk as it is sealed or opened; `b3sum` of the payload
/// gives the same digest.
///
/// Both ends of every update hash every payload octet, so the digest's speed is part of the transfer's:
/// BLAKE3's tree lets `Blake3Hasher` hash 16 of its 1 KiB chunks at once with AVX-512 (`agora bench transport
/// --crypto-only` measures it; BENCHMARKS.md records it).
public final class PayloadDigest {
  let hasher = Blake3Hasher()

  public init() {}

  /// Adds the next chunk of the payload.
  public func update(_ chunk: UnsafeRawBufferPointer) { hasher.update(chunk) }

  /// The state after the chunks so far, to go back to if the next one turns out bad.
  public func saved() -> Blake3Hasher.State { hasher.state }
  public func restore(_ s: Blake3Hasher.State) { hasher.state = s }

  /// The payload digest; the object starts over afterwards.
  public func finish() -> [UInt8] { hasher.finish() }
}
