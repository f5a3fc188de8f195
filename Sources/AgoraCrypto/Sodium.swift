import CSodium

/// An error from a libsodium call, naming the function and what went wrong.
public struct SodiumError: Error, Equatable, CustomStringConvertible {
  public let function: String
  public let reason: String
  public init(_ function: String, _ reason: String = "failed") {
    self.function = function
    self.reason = reason
  }
  public var description: String { "libsodium \(function): \(reason)" }
}

/// The one funnel through which Agora calls libsodium: sizes are checked before every call and every
/// non-zero return becomes a `SodiumError` naming the function.
public enum Sodium {
  /// Initialises libsodium (idempotent and thread-safe, per its documentation).
  public static func initialise() throws {
    guard sodium_init() >= 0 else { throw SodiumError("sodium_init") }
  }

  static let ready: Bool = (try? initialise()) != nil

  @inline(__always) static func check(_ r: Int32, _ fn: String) throws {
    guard r == 0 else { throw SodiumError(fn) }
  }

  @inline(__always) static func require(_ bytes: [UInt8], _ n: Int, _ fn: String, _ what: String) throws {
    guard bytes.count == n else { throw SodiumError(fn, "\(what) must be \(n) bytes, got \(bytes.count)") }
  }

  // MARK: - Randomness and hashing

  public static func randomBytes(_ n: Int) -> [UInt8] {
    _ = ready
    var b = [UInt8](repeating: 0, count: n)
    randombytes_buf(&b, n)
    return b
  }

  /// BLAKE2b (libsodium's generichash) of `data`, `length` bytes (16...64), unkeyed.
  public static func blake2b(_ data: UnsafeRawBufferPointer, length: Int = 32) -> [UInt8] {
    _ = ready
    var out = [UInt8](repeating: 0, count: length)
    _ = crypto_generichash(&out, length, data.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(data.count), nil, 0)
    return out
  }

  public static func blake2b(_ data: [UInt8], length: Int = 32) -> [UInt8] {
    data.withUnsafeBytes { blake2b($0, length: length) }
  }

  /// Incremental BLAKE2b for data that arrives in pieces (e.g. streamed tensors).
  public final class Hasher {
    let state: UnsafeMutableRawPointer
    let length: Int
    public init(length: Int = 32) {
      _ = Sodium.ready
      self.length = length
      // The state is 64-byte aligned in C and opaque to Swift: allocate it by its reported size.
      state = .allocate(byteCount: crypto_generichash_statebytes(), alignment: 64)
      _ = crypto_generichash_init(OpaquePointer(state), nil, 0, length)
    }
    deinit { state.deallocate() }
    public func update(_ data: UnsafeRawBufferPointer) {
      _ = crypto_generichash_update(OpaquePointer(state), data.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(data.count))
    }
    public func update(_ data: [UInt8]) { data.withUnsafeBytes { update($0) } }
    public func finish() -> [UInt8] {
      var out = [UInt8](repeating: 0, count: length)
      _ = crypto_generichash_final(OpaquePointer(state), &out, length)
      return out
    }
  }

  /// Overwrites secret bytes in a way the compiler may not remove.
  public static func wipe(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { sodium_memzero($0.baseAddress, $0.count) }
  }

  /// Constant-time comparison of equal-length byte strings.
  public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.count == b.count && sodium_memcmp(a, b, a.count) == 0
  }

  // MARK: - Ed25519 signatures

  public static var signPublicKeyBytes: Int { Int(crypto_sign_publickeybytes()) }
  public static var signSecretKeyBytes: Int { Int(crypto_sign_secretkeybytes()) }
  public static var signatureBytes: Int { Int(crypto_sign_bytes()) }

  /// A new Ed25519 key pair (public 32 bytes, secret 64 bytes), or the one derived from a 32-byte seed.
  public static func signKeypair(seed: [UInt8]? = nil) throws -> (publicKey: [UInt8], secretKey: [UInt8]) {
    try initialise()
    var pk = [UInt8](repeating: 0, count: signPublicKeyBytes)
    var sk = [UInt8](repeating: 0, count: signSecretKeyBytes)
    if let seed {
      try require(seed, Int(crypto_sign_seedbytes()), "crypto_sign_seed_keypair", "seed")
      try check(crypto_sign_seed_keypair(&pk, &sk, seed), "crypto_sign_seed_keypair")
    } else {
      try check(crypto_sign_keypair(&pk, &sk), "crypto_sign_keypair")
    }
    return (pk, sk)
  }

  /// A detached Ed25519 signature of `message`.
  public static func sign(_ message: [UInt8], secretKey: [UInt8]) throws -> [UInt8] {
    try require(secretKey, signSecretKeyBytes, "crypto_sign_detached", "secret key")
    var sig = [UInt8](repeating: 0, count: signatureBytes)
    try check(crypto_sign_detached(&sig, nil, message, UInt64(message.count), secretKey), "crypto_sign_detached")
    return sig
  }

  /// Whether `signature` is a valid Ed25519 signature of `message` by `publicKey`.
  public static func verify(_ signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
    guard signature.count == signatureBytes, publicKey.count == signPublicKeyBytes else { return false }
    return crypto_sign_verify_detached(signature, message, UInt64(message.count), publicKey) == 0
  }

  // MARK: - X25519 boxes

  public static var boxPublicKeyBytes: Int { Int(crypto_box_publickeybytes()) }
  public static var boxSecretKeyBytes: Int { Int(crypto_box_secretkeybytes()) }
  public static var sealBytes: Int { Int(crypto_box_sealbytes()) }

  /// A new X25519 key pair, or the one derived from a 32-byte seed.
  public static func boxKeypair(seed: [UInt8]? = nil) throws -> (publicKey: [UInt8], secretKey: [UInt8]) {
    try initialise()
    var pk = [UInt8](repeating: 0, count: boxPublicKeyBytes)
    var sk = [UInt8](repeating: 0, count: boxSecretKeyBytes)
    if let seed {
      try require(seed, Int(crypto_box_seedbytes()), "crypto_box_seed_keypair", "seed")
      try check(crypto_box_seed_keypair(&pk, &sk, seed), "crypto_box_seed_keypair")
    } else {
      try check(crypto_box_keypair(&pk, &sk), "crypto_box_keypair")
    }
    return (pk, sk)
  }

  /// The X25519 public key of a secret key.
  public static func boxPublicKey(secretKey: [UInt8]) throws -> [UInt8] {
    try require(secretKey, boxSecretKeyBytes, "crypto_scalarmult_base", "secret key")
    var pk = [UInt8](repeating: 0, count: boxPublicKeyBytes)
    try check(crypto_scalarmult_base(&pk, secretKey), "crypto_scalarmult_base")
    return pk
  }

  /// A sealed box (`crypto_box_seal`): `message` encrypted to `publicKey` from a fresh ephemeral key.
  ///
  /// With `ephemeralSeed` the ephemeral key is derived from it instead, giving reproducible output for
  /// test vectors; the result is the same construction (ephemeral_pk ‖ box(m, nonce = BLAKE2b(epk ‖ pk)))
  /// and opens with `crypto_box_seal_open`.
  public static func seal(_ message: [UInt8], to publicKey: [UInt8], ephemeralSeed: [UInt8]? = nil) throws -> [UInt8] {
    try require(publicKey, boxPublicKeyBytes, "crypto_box_seal", "public key")
    var out = [UInt8](repeating: 0, count: message.count + sealBytes)
    guard let seed = ephemeralSeed else {
      try check(crypto_box_seal(&out, message, UInt64(message.count), publicKey), "crypto_box_seal")
      return out
    }
    var (epk, esk) = try boxKeypair(seed: seed)
    defer { wipe(&esk) }
    let nonce = blake2b(epk + publicKey, length: Int(crypto_box_noncebytes()))
    var boxed = [UInt8](repeating: 0, count: message.count + Int(crypto_box_macbytes()))
    try check(crypto_box_easy(&boxed, message, UInt64(message.count), nonce, publicKey, esk), "crypto_box_easy")
    return epk + boxed
  }

  /// Opens a sealed box with the recipient's key pair.
  public static func sealOpen(_ sealed: [UInt8], publicKey: [UInt8], secretKey: [UInt8]) throws -> [UInt8] {
    guard sealed.count >= sealBytes else { throw SodiumError("crypto_box_seal_open", "sealed box of \(sealed.count) bytes is shorter than \(sealBytes)") }
    try require(publicKey, boxPublicKeyBytes, "crypto_box_seal_open", "public key")
    try require(secretKey, boxSecretKeyBytes, "crypto_box_seal_open", "secret key")
    var out = [UInt8](repeating: 0, count: sealed.count - sealBytes)
    guard crypto_box_seal_open(&out, sealed, UInt64(sealed.count), publicKey, secretKey) == 0 else {
      throw SodiumError("crypto_box_seal_open", "wrong key or tampered box")
    }
    return out
  }
}
