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
/// little-endian words of w bits and added to (or subtracted from) a vector of 32-bit words, wrapping mod 2^32.
/// For a ring of b bits, w = 8 when b ≤ 8, 16 when b ≤ 16 and 32 otherwise: the sum is exact mod 2^w, so also
/// mod 2^b (the low b bits of a uniform word are uniform), and a narrow ring costs a half or a quarter of the
/// keystream. A seed is used for one vector only (seeds are derived per round and pair). Several masks are
/// applied in one pass over the vector, a slice at a time (the slice stays in cache while each mask's keystream
/// is added), on several threads.
public final class MaskStream {
  static let cipher: OpaquePointer? = EVP_CIPHER_fetch(nil, "AES-256-CTR", nil)
  /// Words per slice: 16 Ki, a whole number of AES blocks at every width (16 words of 8 bits, 8 of 16, 4 of 32).
  public static let words = 16 * 1024
  public let threads: Int
  /// w: the keystream's word width, 8, 16 or 32.
  public let wordBits: Int

  /// The masks of a ring of `ringBits` bits (32: full words).
  public init(threads: Int = 1, ringBits: Int = 32) throws {
    guard MaskStream.cipher != nil else { throw OpenSSL.fail("EVP_CIPHER_fetch(AES-256-CTR)") }
    guard (1...32).contains(ringBits) else { throw SodiumError("AES-256-CTR mask", "a ring of \(ringBits) bits") }
    self.threads = max(1, threads)
    wordBits = ringBits <= 8 ? 8 : (ringBits <= 16 ? 16 : 32)
  }

  /// values[i] += sign · word_i(seed), mod 2^32 (exact mod 2^w), for every i (sign +1 when `subtract` is false).
  public func apply(seed: [UInt8], to values: UnsafeMutableBufferPointer<UInt32>, subtract: Bool = false) throws {
    try apply([(seed, subtract)], to: values)
  }

  /// Every mask of `masks` applied to `values` (as `apply(seed:to:subtract:)` does each), in one pass. `values`
  /// may be a piece of a longer vector that starts at word `first` (a multiple of `MaskStream.words`): it then
  /// gets the same words as in the whole.
  public func apply(_ masks: [(seed: [UInt8], subtract: Bool)], to values: UnsafeMutableBufferPointer<UInt32>, first: Int = 0) throws {
    for m in masks where m.seed.count != 32 { throw SodiumError("AES-256-CTR mask", "seed must be 32 bytes, got \(m.seed.count)") }
    guard first >= 0, first % MaskStream.words == 0 else { throw SodiumError("AES-256-CTR mask", "a piece must start at a multiple of \(MaskStream.words) words, not \(first)") }
    guard !masks.isEmpty, values.count > 0 else { return }
    let slices = (values.count + MaskStream.words - 1) / MaskStream.words
    let workers = min(threads, slices)
    let base = values.baseAddress!, count = values.count, octets = wordBits / 8
    if workers == 1 {
      guard run(masks, base: base, count: count, first: first, octets: octets, worker: 0, workers: 1) else { throw OpenSSL.fail("AES-256-CTR mask") }
      return
    }
    let failed = UnsafeMutableBufferPointer<Bool>.allocate(capacity: workers)
    failed.initialize(repeating: false)
    defer { failed.deallocate() }
    DispatchQueue.concurrentPerform(iterations: workers) { w in
      failed[w] = !run(masks, base: base, count: count, first: first, octets: octets, worker: w, workers: workers)
    }
    if failed.contains(true) { throw OpenSSL.fail("AES-256-CTR mask") }
  }

  /// Encrypting zeros gives the keystream: one slice of zeros, shared and never written.
  static let zeros: UnsafeMutablePointer<UInt8> = {
    let z = UnsafeMutablePointer<UInt8>.allocate(capacity: words * 4)
    z.initialize(repeating: 0, count: words * 4)
    return z
  }()

  /// Worker w's slices (w, w + workers, …) of values[0..<count]; false when OpenSSL failed.
  private func run(_ masks: [(seed: [UInt8], subtract: Bool)], base: UnsafeMutablePointer<UInt32>, count: Int, first: Int, octets: Int,
                   worker w: Int, workers: Int) -> Bool {
    guard let ctx = EVP_CIPHER_CTX_new() else { return false }
    defer { EVP_CIPHER_CTX_free(ctx) }
    // Keystreams of two masks at a time, then one pass over the slice adds both (half the passes over it).
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: 2 * MaskStream.words * 4, alignment: 64)
    defer { scratch.deallocate() }
    let raw = scratch.bindMemory(to: UInt8.self, capacity: 2 * MaskStream.words * 4)
    raw.initialize(repeating: 0, count: 2 * MaskStream.words * 4)
    var iv = [UInt8](repeating: 0, count: 16)
    let slices = (count + MaskStream.words - 1) / MaskStream.words
    for slice in stride(from: w, to: slices, by: workers) {
      let lo = slice * MaskStream.words, n = min(count - lo, MaskStream.words)
      // The counter block of word first + lo: (first + lo) · w / 128, big-endian in the IV's last eight octets.
      let block = UInt64((first + lo) * octets / 16)
      for i in 0..<8 { iv[8 + i] = UInt8(truncatingIfNeeded: block >> (8 * (7 - i))) }
      let v = base + lo
      for pair in stride(from: 0, to: masks.count, by: 2) {
        let two = pair + 1 < masks.count
        for k in 0..<(two ? 2 : 1) {
          var outl: Int32 = 0
          guard EVP_EncryptInit_ex2(ctx, MaskStream.cipher, masks[pair + k].seed, iv, nil) == 1,
                EVP_EncryptUpdate(ctx, raw + k * MaskStream.words * 4, &outl, MaskStream.zeros, Int32(n * octets)) == 1, Int(outl) == n * octets else { return false }
        }
        let k0 = UnsafeRawPointer(scratch), k1 = UnsafeRawPointer(scratch + MaskStream.words * 4)
        // Signs as multipliers mod 2^32 (1 or 2^32 − 1); a lone last mask pairs with zeros.
        let m0: UInt32 = masks[pair].subtract ? .max : 1
        let m1: UInt32 = two ? (masks[pair + 1].subtract ? .max : 1) : 0
        if octets == 1 {
          for i in 0..<n {
            let a = UInt32(k0.load(fromByteOffset: i, as: UInt8.self)), b = UInt32(k1.load(fromByteOffset: i, as: UInt8.self))
            v[i] = v[i] &+ a &* m0 &+ b &* m1
          }
        } else if octets == 2 {
          for i in 0..<n {
            let a = UInt32(UInt16(littleEndian: k0.load(fromByteOffset: 2 * i, as: UInt16.self)))
            let b = UInt32(UInt16(littleEndian: k1.load(fromByteOffset: 2 * i, as: UInt16.self)))
            v[i] = v[i] &+ a &* m0 &+ b &* m1
          }
        } else {
          for i in 0..<n {
            let a = UInt32(littleEndian: k0.load(fromByteOffset: 4 * i, as: UInt32.self))
            let b = UInt32(littleEndian: k1.load(fromByteOffset: 4 * i, as: UInt32.self))
            v[i] = v[i] &+ a &* m0 &+ b &* m1
          }
        }
      }
    }
    return true
  }
}
