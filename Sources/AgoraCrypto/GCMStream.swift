import COpenSSL
import CSodium
import Foundation

/// The envelope's cipher suites (SPEC §6): which AEAD turns the payload's chunks into messages. Both give
/// every message the same 17 octets of overhead, the same tags and the same guarantees (reordered, dropped,
/// replayed, altered or truncated streams are refused), so the rest of the envelope does not depend on the
/// choice. The sender chooses; a receiver opens both.
public enum EnvelopeSuite: UInt8, Sendable, CaseIterable, CustomStringConvertible {
  /// libsodium's secretstream (XChaCha20-Poly1305): fast everywhere, and the only choice without AES instructions.
  case xchacha20poly1305 = 0
  /// AES-256-GCM with a counter nonce: 2–4× the speed of ChaCha20-Poly1305 on CPUs with AES and carry-less
  /// multiplication instructions (all x86-64 since 2010; OpenSSL uses them, VAES where there is AVX-512).
  case aes256gcm = 1

  public var description: String {
    switch self {
    case .xchacha20poly1305: return "xchacha20poly1305"
    case .aes256gcm: return "aes256gcm"
    }
  }

  public init?(name: String) {
    guard let s = EnvelopeSuite.allCases.first(where: { $0.description == name }) else { return nil }
    self = s
  }

  /// What this machine seals with: AES-256-GCM where the CPU has AES-NI and PCLMULQDQ (and OpenSSL has the
  /// cipher), else XChaCha20-Poly1305. `AGORA_ENVELOPE_SUITE` (a suite's name) overrides it, for benchmarks.
  public static let preferred: EnvelopeSuite = {
    if let name = ProcessInfo.processInfo.environment["AGORA_ENVELOPE_SUITE"], let s = EnvelopeSuite(name: name) { return s }
    return GCMStream.hardware ? .aes256gcm : .xchacha20poly1305
  }()
}

/// AES-256-GCM (NIST SP 800-38D, 96-bit nonce, 128-bit tag) through OpenSSL's EVP under one key, fed in
/// pieces. The key is kept in memory of its own, wiped when the cipher goes.
final class AES256GCM {
  static let cipher: OpaquePointer? = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil)
  let ctx: OpaquePointer
  let key: UnsafeMutableRawPointer

  init(key k: [UInt8]) throws {
    guard k.count == 32 else { throw SodiumError("AES-256-GCM", "key of \(k.count) bytes, expected 32") }
    guard AES256GCM.cipher != nil, let c = EVP_CIPHER_CTX_new() else { throw OpenSSL.fail("EVP_CIPHER_CTX_new(AES-256-GCM)") }
    ctx = c
    key = .allocate(byteCount: 32, alignment: 16)
    key.copyMemory(from: k, byteCount: 32)
  }

  deinit {
    EVP_CIPHER_CTX_free(ctx)
    sodium_memzero(key, 32)
    key.deallocate()
  }

  /// Starts a message: `nonce` 12 octets, `ad` authenticated and not encrypted.
  func start(encrypt: Bool, nonce: UnsafeRawPointer, ad: UnsafeRawBufferPointer) throws {
    guard EVP_CipherInit_ex2(ctx, AES256GCM.cipher, UnsafePointer(key.assumingMemoryBound(to: UInt8.self)), nonce.assumingMemoryBound(to: UInt8.self),
                             encrypt ? 1 : 0, nil) == 1 else { throw OpenSSL.fail("EVP_CipherInit_ex2(AES-256-GCM)") }
    if ad.count > 0 {
      var outl: Int32 = 0
      guard EVP_CipherUpdate(ctx, nil, &outl, ad.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(ad.count)) == 1 else {
        throw OpenSSL.fail("EVP_CipherUpdate(AES-256-GCM, ad)")
      }
    }
  }

  /// Encrypts or decrypts `count` octets (`input` and `output` the same memory or not overlapping).
  func update(_ input: UnsafeRawPointer, _ output: UnsafeMutableRawPointer, _ count: Int) throws {
    try OpenSSL.update(ctx, input, output, count, "AES-256-GCM")
  }

  /// Ends an encryption and writes its 16-octet tag.
  func sealTag(into tag: UnsafeMutableRawPointer) throws {
    var outl: Int32 = 0
    var none: UInt8 = 0
    guard EVP_CipherFinal_ex(ctx, &none, &outl) == 1, outl == 0,
          EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) == 1 else { throw OpenSSL.fail("EVP_CipherFinal_ex(AES-256-GCM)") }
  }

  /// Ends a decryption: true when `tag` (16 octets) authenticates what was decrypted.
  func checkTag(_ tag: UnsafeRawPointer) throws -> Bool {
    guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, UnsafeMutableRawPointer(mutating: tag)) == 1 else {
      throw OpenSSL.fail("EVP_CIPHER_CTX_ctrl(AES-256-GCM, set tag)")
    }
    var outl: Int32 = 0
    var none: UInt8 = 0
    return EVP_CipherFinal_ex(ctx, &none, &outl) == 1
  }
}

/// The envelope's AES-256-GCM suite (SPEC §6, suite 1): a stream of messages under one key, shaped like a
/// secretstream's so the two are interchangeable:
///
///     nonce_i   = 4 zero octets ‖ u64 i (big-endian)        ; i: the message's place in the stream, from 0
///     message_i = AES-256-GCM(K, nonce_i, ad; [tag] ‖ m)    ; = E(tag) (1) ‖ c (|m|) ‖ GCM tag (16)
///
/// The key is fresh for every envelope (32 random octets, sealed to the coordinator), so a counter nonce never
/// repeats under a key. The index in the nonce rejects reordered, dropped or replayed messages; the encrypted
/// tag octet (`SecretStream.tagMessage` or `tagFinal`) marks the final one, and no message can be made final
/// without the key; a stream that stops before it is truncated.
public enum GCMStream {
  public static let overhead = 17

  /// Whether this CPU has the instructions that make AES-GCM fast and constant-time (AES-NI and PCLMULQDQ,
  /// as Linux lists them) and OpenSSL has the cipher.
  public static let hardware: Bool = {
    guard AES256GCM.cipher != nil, let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
    let flags = Set(line.split(whereSeparator: { $0 == " " || $0 == "\t" }))
    return flags.contains("aes") && flags.contains("pclmulqdq")
  }()

  static func nonce(_ index: UInt64) -> [UInt8] {
    [0, 0, 0, 0] + (0..<8).map { UInt8(truncatingIfNeeded: index >> (56 - 8 * UInt64($0))) }
  }
}

/// The encrypting end of the AES-256-GCM suite.
public final class GCMStreamPush {
  let gcm: AES256GCM
  var index: UInt64 = 0

  public init(key: [UInt8]) throws { gcm = try AES256GCM(key: key) }

  /// Encrypts one message with associated data `ad` into `out` (exactly `message.count + 17` octets, not
  /// overlapping `message`). `each` sees the plaintext piece by piece (`SecretStream.piece` octets) just
  /// before it is encrypted, e.g. to hash it while it is in the cache.
  public func push(_ message: UnsafeRawBufferPointer, ad: [UInt8] = [], tag: UInt8, into out: UnsafeMutableRawBufferPointer,
                   each: ((UnsafeRawBufferPointer) -> Void)? = nil) throws {
    guard out.count == message.count + GCMStream.overhead else {
      throw SodiumError("AES-256-GCM push", "output of \(out.count) bytes for a \(message.count)-byte message")
    }
    try GCMStream.nonce(index).withUnsafeBytes { n in try ad.withUnsafeBytes { try gcm.start(encrypt: true, nonce: n.baseAddress!, ad: $0) } }
    var t = tag
    try gcm.update(&t, out.baseAddress!, 1)
    let c = out.baseAddress!.advanced(by: 1)
    for (at, n) in SecretStream.pieces(message.count) {
      let plain = UnsafeRawBufferPointer(rebasing: message[at..<(at + n)])
      each?(plain)
      try gcm.update(plain.baseAddress!, c + at, n)
    }
    try gcm.sealTag(into: c + message.count)
    index += 1
  }

  public func push(_ message: [UInt8], ad: [UInt8] = [], final: Bool = false) throws -> [UInt8] {
    try [UInt8](unsafeUninitializedCapacity: message.count + GCMStream.overhead) { out, n in
      try message.withUnsafeBytes {
        try push($0, ad: ad, tag: final ? SecretStream.tagFinal : SecretStream.tagMessage, into: UnsafeMutableRawBufferPointer(out))
      }
      n = out.count
    }
  }
}

/// The decrypting end of the AES-256-GCM suite.
public final class GCMStreamPull {
  let gcm: AES256GCM
  var index: UInt64 = 0
  public private(set) var finished = false

  public init(key: [UInt8]) throws { gcm = try AES256GCM(key: key) }

  /// Authenticates and decrypts the next message into `out` (`cipher.count - 17` octets, not overlapping
  /// `cipher`); returns its tag. Throws on a wrong key, tampering, reordering, replay or a message after the
  /// final one, and then leaves the stream where it was. As `SecretStreamPull.pull`, the tag is checked after
  /// the whole message was decrypted piece by piece: on failure `out` holds garbage and `each` has seen it;
  /// the caller must discard both.
  public func pull(_ cipher: UnsafeRawBufferPointer, ad: [UInt8] = [], into out: UnsafeMutableRawBufferPointer,
                   each: ((UnsafeRawBufferPointer) -> Void)? = nil) throws -> UInt8 {
    let fn = "AES-256-GCM pull"
    let mlen = try messageLength(cipher, out, finished: finished, fn)
    try GCMStream.nonce(index).withUnsafeBytes { n in try ad.withUnsafeBytes { try gcm.start(encrypt: false, nonce: n.baseAddress!, ad: $0) } }
    var tag: UInt8 = 0
    try gcm.update(cipher.baseAddress!, &tag, 1)
    let c = cipher.baseAddress!.advanced(by: 1)
    for (at, n) in SecretStream.pieces(mlen) {
      try gcm.update(c + at, out.baseAddress! + at, n)
      each?(UnsafeRawBufferPointer(rebasing: out[at..<(at + n)]))
    }
    guard try gcm.checkTag(c + mlen), tag == SecretStream.tagMessage || tag == SecretStream.tagFinal else {
      throw SodiumError(fn, "forged, altered, reordered or replayed message")
    }
    index += 1
    if tag == SecretStream.tagFinal { finished = true }
    return tag
  }

  /// Decrypts the next message; returns the plaintext and whether it was the final one.
  public func pull(_ cipher: [UInt8], ad: [UInt8] = []) throws -> (message: [UInt8], final: Bool) {
    guard cipher.count >= GCMStream.overhead else { throw SodiumError("AES-256-GCM pull", "message of \(cipher.count) bytes is shorter than \(GCMStream.overhead)") }
    var tag: UInt8 = 0
    let plain = try [UInt8](unsafeUninitializedCapacity: cipher.count - GCMStream.overhead) { out, n in
      tag = try cipher.withUnsafeBytes { try pull($0, ad: ad, into: UnsafeMutableRawBufferPointer(out)) }
      n = out.count
    }
    return (plain, tag == SecretStream.tagFinal)
  }
}

/// One message after another under an envelope's suite (`SecretStreamPush` or `GCMStreamPush`).
protocol ChunkPush: AnyObject {
  func push(_ message: UnsafeRawBufferPointer, ad: [UInt8], tag: UInt8, into out: UnsafeMutableRawBufferPointer,
            each: ((UnsafeRawBufferPointer) -> Void)?) throws
  func push(_ message: [UInt8], ad: [UInt8], final: Bool) throws -> [UInt8]
}

/// The opening end (`SecretStreamPull` or `GCMStreamPull`).
protocol ChunkPull: AnyObject {
  func pull(_ cipher: UnsafeRawBufferPointer, ad: [UInt8], into out: UnsafeMutableRawBufferPointer,
            each: ((UnsafeRawBufferPointer) -> Void)?) throws -> UInt8
  func pull(_ cipher: [UInt8], ad: [UInt8]) throws -> (message: [UInt8], final: Bool)
}

extension SecretStreamPush: ChunkPush {}
extension SecretStreamPull: ChunkPull {}
extension GCMStreamPush: ChunkPush {}
extension GCMStreamPull: ChunkPull {}
