import COpenSSL
import CSodium
import Dispatch

extension Sodium {
  /// X25519 key agreement (`crypto_scalarmult`): the 32-byte shared point of `secretKey` and `publicKey`. A
  /// result of all zeros (a low-order public key) is an error.
  public static func agree(secretKey: [UInt8], publicKey: [UInt8]) throws -> [UInt8] {
    try require(secretKey, boxSecretKeyBytes, "crypto_scalarmult", "secret key")
    try require(publicKey, boxPublicKeyBytes, "crypto_scalarmult", "public key")
    var out = [UInt8](repeating: 0, count: Int(crypto_scalarmult_bytes()))
    guard crypto_scalarmult(&out, secretKey, publicKey) == 0 else { throw SodiumError("crypto_scalarmult", "the public key is of low order") }
    return out
  }

  /// Keyed BLAKE2b (`crypto_generichash` with a key of 16…64 bytes): a PRF, `length` bytes of output.
  public static func keyedHash(_ message: [UInt8], key: [UInt8], length: Int = 32) throws -> [UInt8] {
    guard (Int(crypto_generichash_keybytes_min())...Int(crypto_generichash_keybytes_max())).contains(key.count) else {
      throw SodiumError("crypto_generichash", "key must be 16 to 64 bytes, got \(key.count)")
    }
    var out = [UInt8](repeating: 0, count: length)
    try check(crypto_generichash(&out, length, message, UInt64(message.count), key, key.count), "crypto_generichash")
    return out
  }

  /// An authenticated box from one X25519 key pair to another (`crypto_box_easy`): a fresh random nonce
  /// followed by the ciphertext and its tag.
  public static func box(_ message: [UInt8], to publicKey: [UInt8], from secretKey: [UInt8]) throws -> [UInt8] {
    try require(publicKey, boxPublicKeyBytes, "crypto_box_easy", "public key")
    try require(secretKey, boxSecretKeyBytes, "crypto_box_easy", "secret key")
    let nonce = randomBytes(Int(crypto_box_noncebytes()))
    var out = [UInt8](repeating: 0, count: message.count + Int(crypto_box_macbytes()))
    try check(crypto_box_easy(&out, message, UInt64(message.count), nonce, publicKey, secretKey), "crypto_box_easy")
    return nonce + out
  }

  /// Opens `box` (nonce ‖ ciphertext ‖ tag) from `publicKey` to `secretKey`; a wrong key or any changed octet is
  /// an error.
  public static func boxOpen(_ box: [UInt8], from publicKey: [UInt8], to secretKey: [UInt8]) throws -> [UInt8] {
    let nb = Int(crypto_box_noncebytes()), mb = Int(crypto_box_macbytes())
    guard box.count >= nb + mb else { throw SodiumError("crypto_box_open_easy", "box of \(box.count) bytes is shorter than \(nb + mb)") }
    try require(publicKey, boxPublicKeyBytes, "crypto_box_open_easy", "public key")
    try require(secretKey, boxSecretKeyBytes, "crypto_box_open_easy", "secret key")
    var out = [UInt8](repeating: 0, count: box.count - nb - mb)
    let r = box.withUnsafeBufferPointer { b in
      crypto_box_open_easy(&out, b.baseAddress! + nb, UInt64(box.count - nb), b.baseAddress!, publicKey, secretKey)
    }
    guard r == 0 else { throw SodiumError("crypto_box_open_easy", "wrong key or tampered box") }
    return out
  }
}

/// The pseudorandom masks of secure aggregation: AES-256 in counter mode (OpenSSL's libcrypto, AES-NI/VAES
/// here: about 6 GB/s per core against 2.8 for ChaCha20) keyed by a 32-byte seed, from a zero counter, read as
/// little-endian 32-bit words and added to (or subtracted from) a vector of them, wrapping mod 2^32 (so also mod
/// 2^b for every b ≤ 32: the low b bits of a uniform word are uniform). A seed is used for one vector only
/// (seeds are derived per round and pair). Several masks are applied in one pass over the vector, a slice at a
/// time (the slice stays in cache while each mask's keystream is added), on several threads.
public final class MaskStream {
  static let cipher: OpaquePointer? = EVP_CIPHER_fetch(nil, "AES-256-CTR", nil)
  /// Words per slice: 16 Ki (64 KiB), a multiple of the 4 words of an AES block.
  static let words = 16 * 1024
  public let threads: Int

  public init(threads: Int = 1) throws {
    guard MaskStream.cipher != nil else { throw OpenSSL.fail("EVP_CIPHER_fetch(AES-256-CTR)") }
    self.threads = max(1, threads)
  }

  /// values[i] += sign · word_i(seed), mod 2^32, for every i (sign +1 when `subtract` is false).
  public func apply(seed: [UInt8], to values: UnsafeMutableBufferPointer<UInt32>, subtract: Bool = false) throws {
    try apply([(seed, subtract)], to: values)
  }

  /// Every mask of `masks` applied to `values` (as `apply(seed:to:subtract:)` does each), in one pass.
  public func apply(_ masks: [(seed: [UInt8], subtract: Bool)], to values: UnsafeMutableBufferPointer<UInt32>) throws {
    for m in masks where m.seed.count != 32 { throw SodiumError("AES-256-CTR mask", "seed must be 32 bytes, got \(m.seed.count)") }
    guard !masks.isEmpty, values.count > 0 else { return }
    let slices = (values.count + MaskStream.words - 1) / MaskStream.words
    let workers = min(threads, slices)
    let failed = UnsafeMutableBufferPointer<Bool>.allocate(capacity: workers)
    failed.initialize(repeating: false)
    defer { failed.deallocate() }
    let base = values.baseAddress!, count = values.count
    DispatchQueue.concurrentPerform(iterations: workers) { w in
      guard let ctx = EVP_CIPHER_CTX_new() else { failed[w] = true; return }
      defer { EVP_CIPHER_CTX_free(ctx) }
      let scratch = UnsafeMutablePointer<UInt32>.allocate(capacity: MaskStream.words)
      defer { scratch.deallocate() }
      let raw = UnsafeMutableRawPointer(scratch).assumingMemoryBound(to: UInt8.self)
      var iv = [UInt8](repeating: 0, count: 16)
      for slice in stride(from: w, to: slices, by: workers) {
        let lo = slice * MaskStream.words, n = min(count - lo, MaskStream.words)
        // The counter block of word lo: lo / 4, big-endian in the IV's last eight octets.
        let block = UInt64(lo / 4)
        for i in 0..<8 { iv[8 + i] = UInt8(truncatingIfNeeded: block >> (8 * (7 - i))) }
        let v = base + lo
        for m in masks {
          guard EVP_EncryptInit_ex2(ctx, MaskStream.cipher, m.seed, iv, nil) == 1 else { failed[w] = true; return }
          // Encrypting zeros gives the keystream.
          raw.update(repeating: 0, count: n * 4)
          var outl: Int32 = 0
          guard EVP_EncryptUpdate(ctx, raw, &outl, raw, Int32(n * 4)) == 1, Int(outl) == n * 4 else { failed[w] = true; return }
          if m.subtract {
            for i in 0..<n { v[i] &-= UInt32(littleEndian: scratch[i]) }
          } else {
            for i in 0..<n { v[i] &+= UInt32(littleEndian: scratch[i]) }
          }
        }
      }
    }
    if failed.contains(true) { throw OpenSSL.fail("AES-256-CTR mask") }
  }
}
