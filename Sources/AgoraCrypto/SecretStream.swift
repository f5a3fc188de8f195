import CSodium

/// libsodium's secretstream (XChaCha20-Poly1305): an authenticated stream of messages under one key,
/// where reordering, dropping, replaying or altering a message makes `pull` fail, and the final message
/// carries `TAG_FINAL`, so a truncated stream is detected.
///
/// The format is libsodium's, byte for byte (`crypto_secretstream_xchacha20poly1305_*`, libsodium ≥ 1.0.14):
/// the stream's key and nonce come from libsodium's own `init_push`/`init_pull` (HChaCha20 of the key and
/// the header); each message is then built here from OpenSSL's ChaCha20 and Poly1305, which are faster on
/// this hardware than libsodium's (see `FastCipher.swift`), exactly as libsodium builds it:
///
///     block0  = ChaCha20(k, nonce, counter 0)                    (its first 32 bytes key Poly1305)
///     E(tag)  = ([tag] ‖ 63 zero bytes) ⊕ ChaCha20(k, nonce, counter 1)
///     c       = m ⊕ ChaCha20(k, nonce, counter 2…)
///     mac     = Poly1305(ad ‖ pad16(ad) ‖ E(tag) ‖ c ‖ zeros(mlen mod 16) ‖ le64(adlen) ‖ le64(64 + mlen))
///     message = E(tag)[0] ‖ c ‖ mac
///     then inonce ^= mac[0..<8]; counter += 1; rekey on TAG_REKEY/TAG_FINAL or when the counter wraps.
///
/// (The padding after c is libsodium's `(0x10 - 64 + mlen) & 0xf`, i.e. `mlen mod 16`, kept for
/// compatibility.) The tests check every message length class, associated data, rekeying and counter
/// wrap-around against libsodium's own push and pull in both directions.
public enum SecretStream {
  public static var keyBytes: Int { Int(crypto_secretstream_xchacha20poly1305_keybytes()) }
  public static var headerBytes: Int { Int(crypto_secretstream_xchacha20poly1305_headerbytes()) }
  /// Bytes each message grows by (tag and MAC).
  public static var overhead: Int { Int(crypto_secretstream_xchacha20poly1305_abytes()) }
  public static var tagMessage: UInt8 { crypto_secretstream_xchacha20poly1305_tag_message() }
  public static var tagFinal: UInt8 { crypto_secretstream_xchacha20poly1305_tag_final() }
  public static var tagRekey: UInt8 { crypto_secretstream_xchacha20poly1305_tag_rekey() }

  /// A message is encrypted, authenticated and shown to the caller's `each` in pieces of this many bytes, so
  /// that each piece is still in the core's L2 cache for the second and third pass over it (a 1 MiB chunk
  /// and its ciphertext together do not fit).
  public static let piece = 128 << 10

  /// Where each piece of a `count`-octet message starts, and its length.
  static func pieces(_ count: Int) -> [(at: Int, n: Int)] {
    stride(from: 0, to: count, by: piece).map { ($0, min(piece, count - $0)) }
  }

  public static func keygen() -> [UInt8] {
    _ = Sodium.ready
    var k = [UInt8](repeating: 0, count: keyBytes)
    crypto_secretstream_xchacha20poly1305_keygen(&k)
    return k
  }
}

/// The key and nonce of one direction of a stream, in libsodium's state layout: k (32) ‖ counter (4, LE) ‖
/// inonce (8); counter ‖ inonce is the 96-bit ChaCha20 nonce.
final class SecretStreamState {
  static let size = 44
  let mem: UnsafeMutableRawPointer
  let chacha: ChaCha20Stream
  let poly: Poly1305
  var key: UnsafeMutableRawPointer { mem }
  var nonce: UnsafeMutableRawPointer { mem.advanced(by: 32) }

  /// Takes k and nonce from a libsodium state that `init_push` or `init_pull` filled.
  init(from st: UnsafePointer<crypto_secretstream_xchacha20poly1305_state>) throws {
    chacha = try ChaCha20Stream()
    poly = try Poly1305()
    mem = .allocate(byteCount: 64, alignment: 16)
    mem.copyMemory(from: UnsafeRawPointer(st), byteCount: SecretStreamState.size)
  }

  deinit {
    sodium_memzero(mem, 64)
    mem.deallocate()
  }

  var counter: UInt32 {
    get { UInt32(littleEndian: nonce.loadUnaligned(as: UInt32.self)) }
    set { nonce.storeBytes(of: newValue.littleEndian, as: UInt32.self) }
  }

  /// Poly1305 keyed with keystream block 0, fed `ad` and its padding.
  func startMAC(ad: UnsafeRawBufferPointer) throws {
    var block = [UInt8](repeating: 0, count: 64)
    try block.withUnsafeMutableBytes { b in
      try chacha.xor(key: key, nonce: nonce, counter: 0, input: b.baseAddress!, output: b.baseAddress!, count: 64)
      try poly.start(key: b.baseAddress!)
      sodium_memzero(b.baseAddress!, 64)
    }
    try poly.update(ad.baseAddress, ad.count)
    try poly.update(SecretStreamState.zeros, (16 - ad.count) & 15)
  }

  /// The 64-byte tag block encrypted at counter 1, starting from `first` (the tag, or the received byte).
  func tagBlock(_ first: UInt8) throws -> [UInt8] {
    var block = [UInt8](repeating: 0, count: 64)
    block[0] = first
    try block.withUnsafeMutableBytes { try chacha.xor(key: key, nonce: nonce, counter: 1, input: $0.baseAddress!, output: $0.baseAddress!, count: 64) }
    return block
  }

  /// Ends the MAC of a message whose `count` ciphertext bytes were fed already.
  func finishMAC(adCount: Int, count: Int, into mac: UnsafeMutableRawPointer) throws {
    try poly.update(SecretStreamState.zeros, count & 15)
    var lengths = (UInt64(adCount).littleEndian, UInt64(64 + count).littleEndian)
    try withUnsafeBytes(of: &lengths) { try poly.update($0.baseAddress, 16) }
    try poly.finish(into: mac)
  }

  /// After a message: inonce ^= mac[0..<8], counter + 1, and a rekey when the tag asks or the counter wraps.
  func advance(mac: UnsafeRawPointer, tag: UInt8) throws {
    for i in 0..<8 { nonce.storeBytes(of: nonce.load(fromByteOffset: 4 + i, as: UInt8.self) ^ mac.load(fromByteOffset: i, as: UInt8.self), toByteOffset: 4 + i, as: UInt8.self) }
    counter &+= 1
    if tag & SecretStream.tagRekey != 0 || counter == 0 { try rekey() }
  }

  /// libsodium's rekey: (k ‖ inonce) ^= ChaCha20(k, nonce, counter 0), then counter = 1.
  func rekey() throws {
    var fresh = [UInt8](repeating: 0, count: 40)
    try fresh.withUnsafeMutableBytes { f in
      f.baseAddress!.copyMemory(from: key, byteCount: 32)
      f.baseAddress!.advanced(by: 32).copyMemory(from: nonce.advanced(by: 4), byteCount: 8)
      try chacha.xor(key: key, nonce: nonce, counter: 0, input: f.baseAddress!, output: f.baseAddress!, count: 40)
      key.copyMemory(from: f.baseAddress!, byteCount: 32)
      nonce.advanced(by: 4).copyMemory(from: f.baseAddress!.advanced(by: 32), byteCount: 8)
      sodium_memzero(f.baseAddress!, 40)
    }
    counter = 1
  }

  static let zeros: UnsafeRawPointer = {
    let p = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
    p.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
    return UnsafeRawPointer(p)
  }()
}

/// Starts a libsodium secretstream state and hands it to `body` (wiped afterwards).
func withSodiumStreamState<T>(_ body: (UnsafeMutablePointer<crypto_secretstream_xchacha20poly1305_state>) throws -> T) rethrows -> T {
  let st = UnsafeMutablePointer<crypto_secretstream_xchacha20poly1305_state>.allocate(capacity: 1)
  defer {
    sodium_memzero(st, MemoryLayout<crypto_secretstream_xchacha20poly1305_state>.size)
    st.deallocate()
  }
  return try body(st)
}

/// The encrypting end of a secretstream.
public final class SecretStreamPush {
  let state: SecretStreamState
  public let header: [UInt8]

  /// Starts a stream under `key`. With `header` (24 bytes) the stream is the one a receiver starting from
  /// that header expects — reproducible output for test vectors; without it a random header is drawn.
  public init(key: [UInt8], header fixed: [UInt8]? = nil) throws {
    try Sodium.initialise()
    try Sodium.require(key, SecretStream.keyBytes, "crypto_secretstream_xchacha20poly1305_init_push", "key")
    var h = [UInt8](repeating: 0, count: SecretStream.headerBytes)
    state = try withSodiumStreamState { st in
      if let fixed {
        try Sodium.require(fixed, SecretStream.headerBytes, "crypto_secretstream_xchacha20poly1305_init_pull", "header")
        // init_pull derives exactly the state init_push derives from the same header (libsodium computes
        // both as HChaCha20(key, header[0..<16]) with header[16..<24] as the nonce prefix).
        h = fixed
        try Sodium.check(crypto_secretstream_xchacha20poly1305_init_pull(st, h, key), "crypto_secretstream_xchacha20poly1305_init_pull")
      } else {
        try Sodium.check(crypto_secretstream_xchacha20poly1305_init_push(st, &h, key), "crypto_secretstream_xchacha20poly1305_init_push")
      }
      return try SecretStreamState(from: st)
    }
    header = h
  }

  /// Encrypts one message with associated data `ad` (authenticated, not sent) into `out`, which holds
  /// exactly `message.count + SecretStream.overhead` bytes and does not overlap `message`. `each` sees the
  /// plaintext piece by piece (`SecretStream.piece` bytes) just before it is encrypted, e.g. to hash it
  /// while it is in the cache.
  public func push(_ message: UnsafeRawBufferPointer, ad: [UInt8] = [], tag: UInt8, into out: UnsafeMutableRawBufferPointer,
                   each: ((UnsafeRawBufferPointer) -> Void)? = nil) throws {
    guard out.count == message.count + SecretStream.overhead else {
      throw SodiumError("crypto_secretstream_xchacha20poly1305_push", "output of \(out.count) bytes for a \(message.count)-byte message")
    }
    try ad.withUnsafeBytes { try state.startMAC(ad: $0) }
    let block = try state.tagBlock(tag)
    try block.withUnsafeBytes { try state.poly.update($0.baseAddress, 64) }
    out[0] = block[0]
    let c = out.baseAddress!.advanced(by: 1)
    for (at, n) in SecretStream.pieces(message.count) {
      let plain = UnsafeRawBufferPointer(rebasing: message[at..<(at + n)])
      each?(plain)
      // Keystream block 2 + at/64 onwards (`piece` is a multiple of the 64-byte block).
      try state.chacha.xor(key: state.key, nonce: state.nonce, counter: 2 + UInt32(at / 64), input: plain.baseAddress!, output: c + at, count: n)
      try state.poly.update(c + at, n)
    }
    let mac = c.advanced(by: message.count)
    try state.finishMAC(adCount: ad.count, count: message.count, into: mac)
    try state.advance(mac: mac, tag: tag)
  }

  public func push(_ message: UnsafeRawBufferPointer, ad: [UInt8] = [], final: Bool = false) throws -> [UInt8] {
    try [UInt8](unsafeUninitializedCapacity: message.count + SecretStream.overhead) { out, n in
      try push(message, ad: ad, tag: final ? SecretStream.tagFinal : SecretStream.tagMessage, into: UnsafeMutableRawBufferPointer(out))
      n = out.count
    }
  }

  public func push(_ message: [UInt8], ad: [UInt8] = [], final: Bool = false) throws -> [UInt8] {
    try message.withUnsafeBytes { try push($0, ad: ad, final: final) }
  }

  /// For tests: sets the message counter (to check wrap-around against libsodium).
  func setCounter(_ c: UInt32) { state.counter = c }
}

/// The plaintext length of `cipher` (17 octets more in either envelope suite), checked before a pull: not after
/// the final message, not shorter than the overhead, `out` exactly as long as the plaintext.
func messageLength(_ cipher: UnsafeRawBufferPointer, _ out: UnsafeMutableRawBufferPointer, finished: Bool, _ fn: String) throws -> Int {
  guard !finished else { throw SodiumError(fn, "message after the final one") }
  guard cipher.count >= SecretStream.overhead else { throw SodiumError(fn, "message of \(cipher.count) bytes is shorter than \(SecretStream.overhead)") }
  let mlen = cipher.count - SecretStream.overhead
  guard out.count == mlen else { throw SodiumError(fn, "output of \(out.count) bytes for a \(mlen)-byte message") }
  return mlen
}

/// The decrypting end of a secretstream.
public final class SecretStreamPull {
  let state: SecretStreamState
  public private(set) var finished = false

  public init(key: [UInt8], header: [UInt8]) throws {
    try Sodium.initialise()
    try Sodium.require(key, SecretStream.keyBytes, "crypto_secretstream_xchacha20poly1305_init_pull", "key")
    try Sodium.require(header, SecretStream.headerBytes, "crypto_secretstream_xchacha20poly1305_init_pull", "header")
    state = try withSodiumStreamState { st in
      try Sodium.check(crypto_secretstream_xchacha20poly1305_init_pull(st, header, key), "crypto_secretstream_xchacha20poly1305_init_pull")
      return try SecretStreamState(from: st)
    }
  }

  /// Authenticates and decrypts the next message into `out` (`cipher.count - overhead` bytes, not
  /// overlapping `cipher`); returns its tag. Throws on a wrong key, tampering, reordering, replay or a
  /// message after the final one, and then leaves the stream where it was.
  ///
  /// The MAC, the decryption and `each` (which sees the plaintext piece by piece, e.g. to hash it) run
  /// over one `SecretStream.piece` at a time, while it is in the cache, so the tag is checked only after
  /// the whole message was decrypted: on failure `out` holds garbage and `each` has seen it; the caller
  /// must discard both (as `EnvelopeOpener` does).
  public func pull(_ cipher: UnsafeRawBufferPointer, ad: [UInt8] = [], into out: UnsafeMutableRawBufferPointer,
                   each: ((UnsafeRawBufferPointer) -> Void)? = nil) throws -> UInt8 {
    let fn = "crypto_secretstream_xchacha20poly1305_pull"
    let mlen = try messageLength(cipher, out, finished: finished, fn)
    try ad.withUnsafeBytes { try state.startMAC(ad: $0) }
    var block = try state.tagBlock(cipher[0])
    let tag = block[0]
    block[0] = cipher[0]
    try block.withUnsafeBytes { try state.poly.update($0.baseAddress, 64) }
    let c = cipher.baseAddress!.advanced(by: 1)
    for (at, n) in SecretStream.pieces(mlen) {
      try state.poly.update(c + at, n)
      try state.chacha.xor(key: state.key, nonce: state.nonce, counter: 2 + UInt32(at / 64), input: c + at, output: out.baseAddress! + at, count: n)
      each?(UnsafeRawBufferPointer(rebasing: out[at..<(at + n)]))
    }
    var mac = [UInt8](repeating: 0, count: 16)
    try mac.withUnsafeMutableBytes { try state.finishMAC(adCount: ad.count, count: mlen, into: $0.baseAddress!) }
    guard sodium_memcmp(mac, c.advanced(by: mlen), 16) == 0 else { throw SodiumError(fn, "forged, altered, reordered or replayed message") }
    try mac.withUnsafeBytes { try state.advance(mac: $0.baseAddress!, tag: tag) }
    if tag == SecretStream.tagFinal { finished = true }
    return tag
  }

  /// Decrypts the next message; returns the plaintext and whether it was the final one.
  public func pull(_ cipher: [UInt8], ad: [UInt8] = []) throws -> (message: [UInt8], final: Bool) {
    guard cipher.count >= SecretStream.overhead else {
      throw SodiumError("crypto_secretstream_xchacha20poly1305_pull", "message of \(cipher.count) bytes is shorter than \(SecretStream.overhead)")
    }
    var tag: UInt8 = 0
    let plain = try [UInt8](unsafeUninitializedCapacity: cipher.count - SecretStream.overhead) { out, n in
      tag = try cipher.withUnsafeBytes { try pull($0, ad: ad, into: UnsafeMutableRawBufferPointer(out)) }
      n = out.count
    }
    return (plain, tag == SecretStream.tagFinal)
  }

  /// For tests: sets the message counter (to check wrap-around against libsodium).
  func setCounter(_ c: UInt32) { state.counter = c }
}
