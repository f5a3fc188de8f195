import CSodium

/// Errors from libsodium calls, naming the function that failed.
public struct SodiumError: Error, Equatable, CustomStringConvertible {
  public let function: String
  public var description: String { "libsodium \(function) failed" }
}

/// The one funnel through which Agora calls libsodium.
public enum Sodium {
  /// Initialises libsodium (idempotent, thread-safe per its documentation).
  public static func initialise() throws {
    let r = sodium_init()
    guard r >= 0 else { throw SodiumError(function: "sodium_init") }
  }

  /// A new Ed25519 key pair: (public 32 bytes, secret 64 bytes).
  public static func signKeypair() throws -> (publicKey: [UInt8], secretKey: [UInt8]) {
    try initialise()
    var pk = [UInt8](repeating: 0, count: Int(crypto_sign_publickeybytes()))
    var sk = [UInt8](repeating: 0, count: Int(crypto_sign_secretkeybytes()))
    let r = crypto_sign_keypair(&pk, &sk)
    guard r == 0 else { throw SodiumError(function: "crypto_sign_keypair") }
    return (pk, sk)
  }

  /// A detached Ed25519 signature of `message`.
  public static func sign(_ message: [UInt8], secretKey: [UInt8]) throws -> [UInt8] {
    guard secretKey.count == Int(crypto_sign_secretkeybytes()) else { throw SodiumError(function: "crypto_sign_detached (secret key size)") }
    var sig = [UInt8](repeating: 0, count: Int(crypto_sign_bytes()))
    let r = crypto_sign_detached(&sig, nil, message, UInt64(message.count), secretKey)
    guard r == 0 else { throw SodiumError(function: "crypto_sign_detached") }
    return sig
  }

  /// Whether `signature` is a valid Ed25519 signature of `message` by `publicKey`.
  public static func verify(_ signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
    guard signature.count == Int(crypto_sign_bytes()), publicKey.count == Int(crypto_sign_publickeybytes()) else { return false }
    return crypto_sign_verify_detached(signature, message, UInt64(message.count), publicKey) == 0
  }
}
