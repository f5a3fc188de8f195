import COpenSSL
import CSodium

/// OpenSSL's libcrypto for the three bulk primitives where its code for this hardware is faster than
/// libsodium's (measured with `agora bench transport --crypto-only`): the ChaCha20 keystream and Poly1305
/// (AVX-512 paths) and SHA-256 (SHA extensions). ChaCha20 and Poly1305 carry the bulk of every update:
/// libsodium's secretstream format, built here from them exactly as libsodium builds it (see
/// `SecretStreamPush`); SHA-256 hashes the envelope's head (the payload digest is BLAKE3, `PayloadDigest`). Keys, signatures, sealed boxes and CurveZMQ stay
/// with libsodium.
enum OpenSSL {
  static let chacha20: OpaquePointer? = EVP_CIPHER_fetch(nil, "ChaCha20", nil)
  static let poly1305: OpaquePointer? = EVP_MAC_fetch(nil, "POLY1305", nil)
  static let sha256: OpaquePointer? = EVP_MD_fetch(nil, "SHA256", nil)

  static func fail(_ function: String) -> SodiumError { SodiumError("OpenSSL " + function, "failed") }

  /// `EVP_CipherUpdate` of a started `ctx` over `count` octets, in pieces OpenSSL's 32-bit lengths allow
  /// (`input` and `output` the same memory or not overlapping).
  static func update(_ ctx: OpaquePointer, _ input: UnsafeRawPointer, _ output: UnsafeMutableRawPointer, _ count: Int, _ cipher: String) throws {
    var done = 0
    while done < count {
      let n = min(count - done, 1 << 30)
      var outl: Int32 = 0
      guard EVP_CipherUpdate(ctx, output.advanced(by: done).assumingMemoryBound(to: UInt8.self), &outl,
                             input.advanced(by: done).assumingMemoryBound(to: UInt8.self), Int32(n)) == 1, Int(outl) == n else {
        throw OpenSSL.fail("EVP_CipherUpdate(\(cipher))")
      }
      done += n
    }
  }
}

/// ChaCha20 with a 96-bit nonce and a 32-bit block counter (RFC 8439), as libsodium's
/// `crypto_stream_chacha20_ietf_xor_ic`: `out = in ⊕ keystream(key, nonce, from block ic)`.
final class ChaCha20Stream {
  let ctx: OpaquePointer

  init() throws {
    guard OpenSSL.chacha20 != nil, let c = EVP_CIPHER_CTX_new() else { throw OpenSSL.fail("EVP_CIPHER_CTX_new(ChaCha20)") }
    ctx = c
  }

  deinit { EVP_CIPHER_CTX_free(ctx) }

  /// `key` 32 bytes, `nonce` 12 bytes; `input` and `output` may be the same memory, not otherwise overlap.
  func xor(key: UnsafeRawPointer, nonce: UnsafeRawPointer, counter: UInt32,
           input: UnsafeRawPointer, output: UnsafeMutableRawPointer, count: Int) throws {
    // OpenSSL's IV for ChaCha20 is the 32-bit counter (little-endian) followed by the 96-bit nonce.
    var iv = (UInt32(littleEndian: counter), UInt32(0), UInt32(0), UInt32(0))
    try withUnsafeMutableBytes(of: &iv) { ivb in
      ivb.baseAddress!.advanced(by: 4).copyMemory(from: nonce, byteCount: 12)
      guard EVP_EncryptInit_ex2(ctx, OpenSSL.chacha20, key.assumingMemoryBound(to: UInt8.self), ivb.baseAddress!.assumingMemoryBound(to: UInt8.self), nil) == 1 else {
        throw OpenSSL.fail("EVP_EncryptInit_ex2(ChaCha20)")
      }
    }
    try OpenSSL.update(ctx, input, output, count, "ChaCha20")
  }
}

/// Poly1305 one-time authenticator, fed in pieces, as libsodium's `crypto_onetimeauth_poly1305_*`.
final class Poly1305 {
  let ctx: OpaquePointer

  init() throws {
    guard let mac = OpenSSL.poly1305, let c = EVP_MAC_CTX_new(mac) else { throw OpenSSL.fail("EVP_MAC_CTX_new(POLY1305)") }
    ctx = c
  }

  deinit { EVP_MAC_CTX_free(ctx) }

  func start(key: UnsafeRawPointer) throws {
    guard EVP_MAC_init(ctx, key.assumingMemoryBound(to: UInt8.self), 32, nil) == 1 else { throw OpenSSL.fail("EVP_MAC_init(POLY1305)") }
  }

  func update(_ p: UnsafeRawPointer?, _ n: Int) throws {
    guard n > 0 else { return }
    guard EVP_MAC_update(ctx, p!.assumingMemoryBound(to: UInt8.self), n) == 1 else { throw OpenSSL.fail("EVP_MAC_update(POLY1305)") }
  }

  func finish(into out: UnsafeMutableRawPointer) throws {
    var n = 0
    guard EVP_MAC_final(ctx, out.assumingMemoryBound(to: UInt8.self), &n, 16) == 1, n == 16 else { throw OpenSSL.fail("EVP_MAC_final(POLY1305)") }
  }
}

/// SHA-256 (FIPS 180-4), one-shot or fed in pieces: the hash H of the update envelope's head (SPEC §6).
public final class SHA256 {
  let ctx: OpaquePointer

  public init() {
    guard OpenSSL.sha256 != nil, let c = EVP_MD_CTX_new(), EVP_DigestInit_ex2(c, OpenSSL.sha256, nil) == 1 else {
      // Only an OpenSSL without its default provider fails here: nothing Agora can continue without.
      fatalError("OpenSSL's SHA-256 is unavailable (libcrypto without its default provider?)")
    }
    ctx = c
  }

  deinit { EVP_MD_CTX_free(ctx) }

  public func update(_ data: UnsafeRawBufferPointer) {
    guard data.count > 0 else { return }
    let ok = EVP_DigestUpdate(ctx, data.baseAddress, data.count)
    assert(ok == 1)
  }

  public func update(_ data: [UInt8]) { data.withUnsafeBytes { update($0) } }

  /// The 32-byte digest; the hasher starts over afterwards.
  public func finish() -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 32)
    var n: UInt32 = 0
    let ok = EVP_DigestFinal_ex(ctx, &out, &n)
    assert(ok == 1 && n == 32)
    _ = EVP_DigestInit_ex2(ctx, OpenSSL.sha256, nil)
    return out
  }

  public static func hash(_ data: UnsafeRawBufferPointer) -> [UInt8] {
    let h = SHA256()
    h.update(data)
    return h.finish()
  }

  public static func hash(_ data: [UInt8]) -> [UInt8] { data.withUnsafeBytes { hash($0) } }
}
