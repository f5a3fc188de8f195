import CSodium

/// libsodium's secretstream (XChaCha20-Poly1305): an authenticated stream of messages under one key,
/// where reordering, dropping, replaying or altering a message makes `pull` fail, and the final message
/// carries `TAG_FINAL`, so a truncated stream is detected.
public enum SecretStream {
  public static var keyBytes: Int { Int(crypto_secretstream_xchacha20poly1305_keybytes()) }
  public static var headerBytes: Int { Int(crypto_secretstream_xchacha20poly1305_headerbytes()) }
  /// Bytes each message grows by (tag and MAC).
  public static var overhead: Int { Int(crypto_secretstream_xchacha20poly1305_abytes()) }
  public static var tagMessage: UInt8 { crypto_secretstream_xchacha20poly1305_tag_message() }
  public static var tagFinal: UInt8 { crypto_secretstream_xchacha20poly1305_tag_final() }

  public static func keygen() -> [UInt8] {
    _ = Sodium.ready
    var k = [UInt8](repeating: 0, count: keyBytes)
    crypto_secretstream_xchacha20poly1305_keygen(&k)
    return k
  }
}

/// The encrypting end of a secretstream.
public final class SecretStreamPush {
  let state: UnsafeMutableRawPointer
  public let header: [UInt8]

  /// Starts a stream under `key`. With `header` (24 bytes) the stream is the one a receiver starting from
  /// that header expects — reproducible output for test vectors; without it a random header is drawn.
  public init(key: [UInt8], header fixed: [UInt8]? = nil) throws {
    try Sodium.initialise()
    try Sodium.require(key, SecretStream.keyBytes, "crypto_secretstream_xchacha20poly1305_init_push", "key")
    state = .allocate(byteCount: crypto_secretstream_xchacha20poly1305_statebytes(), alignment: 16)
    var h = [UInt8](repeating: 0, count: SecretStream.headerBytes)
    let st = state.assumingMemoryBound(to: crypto_secretstream_xchacha20poly1305_state.self)
    if let fixed {
      try Sodium.require(fixed, SecretStream.headerBytes, "crypto_secretstream_xchacha20poly1305_init_pull", "header")
      // init_pull derives exactly the state init_push derives from the same header (libsodium computes
      // both as HChaCha20(key, header[0..<16]) with header[16..<24] as the nonce prefix).
      h = fixed
      try Sodium.check(crypto_secretstream_xchacha20poly1305_init_pull(st, h, key), "crypto_secretstream_xchacha20poly1305_init_pull")
    } else {
      try Sodium.check(crypto_secretstream_xchacha20poly1305_init_push(st, &h, key), "crypto_secretstream_xchacha20poly1305_init_push")
    }
    header = h
  }

  deinit {
    sodium_memzero(state, crypto_secretstream_xchacha20poly1305_statebytes())
    state.deallocate()
  }

  /// Encrypts one message with associated data `ad` (authenticated, not sent).
  public func push(_ message: UnsafeRawBufferPointer, ad: [UInt8] = [], final: Bool = false) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: message.count + SecretStream.overhead)
    let tag = final ? SecretStream.tagFinal : SecretStream.tagMessage
    let r = crypto_secretstream_xchacha20poly1305_push(
      state.assumingMemoryBound(to: crypto_secretstream_xchacha20poly1305_state.self), &out, nil, message.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(message.count),
      ad, UInt64(ad.count), tag)
    try Sodium.check(r, "crypto_secretstream_xchacha20poly1305_push")
    return out
  }

  public func push(_ message: [UInt8], ad: [UInt8] = [], final: Bool = false) throws -> [UInt8] {
    try message.withUnsafeBytes { try push($0, ad: ad, final: final) }
  }
}

/// The decrypting end of a secretstream.
public final class SecretStreamPull {
  let state: UnsafeMutableRawPointer
  public private(set) var finished = false

  public init(key: [UInt8], header: [UInt8]) throws {
    try Sodium.initialise()
    try Sodium.require(key, SecretStream.keyBytes, "crypto_secretstream_xchacha20poly1305_init_pull", "key")
    try Sodium.require(header, SecretStream.headerBytes, "crypto_secretstream_xchacha20poly1305_init_pull", "header")
    state = .allocate(byteCount: crypto_secretstream_xchacha20poly1305_statebytes(), alignment: 16)
    try Sodium.check(crypto_secretstream_xchacha20poly1305_init_pull(state.assumingMemoryBound(to: crypto_secretstream_xchacha20poly1305_state.self), header, key),
                     "crypto_secretstream_xchacha20poly1305_init_pull")
  }

  deinit {
    sodium_memzero(state, crypto_secretstream_xchacha20poly1305_statebytes())
    state.deallocate()
  }

  /// Decrypts the next message; returns the plaintext and whether it was the final one.
  /// Throws on a wrong key, tampering, reordering, replay or a message after the final one.
  public func pull(_ cipher: [UInt8], ad: [UInt8] = []) throws -> (message: [UInt8], final: Bool) {
    guard !finished else { throw SodiumError("crypto_secretstream_xchacha20poly1305_pull", "message after the final one") }
    guard cipher.count >= SecretStream.overhead else {
      throw SodiumError("crypto_secretstream_xchacha20poly1305_pull", "message of \(cipher.count) bytes is shorter than \(SecretStream.overhead)")
    }
    var out = [UInt8](repeating: 0, count: cipher.count - SecretStream.overhead)
    var tag: UInt8 = 0
    let r = crypto_secretstream_xchacha20poly1305_pull(state.assumingMemoryBound(to: crypto_secretstream_xchacha20poly1305_state.self), &out, nil, &tag, cipher, UInt64(cipher.count), ad, UInt64(ad.count))
    guard r == 0 else { throw SodiumError("crypto_secretstream_xchacha20poly1305_pull", "forged, altered, reordered or replayed message") }
    if tag == SecretStream.tagFinal { finished = true }
    return (out, tag == SecretStream.tagFinal)
  }
}
