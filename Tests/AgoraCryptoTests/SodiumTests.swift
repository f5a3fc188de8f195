@testable import AgoraCrypto
import AgoraTestSupport
import Testing

/// libsodium initialises, and a signature verifies exactly on the message it signs.
@Suite struct SodiumTests {
  @Test func sodiumInitialisesAndSigns() throws {
    try Sodium.initialise()
    let (pk, sk) = try Sodium.signKeypair()
    let msg = Array("agora".utf8)
    let sig = try Sodium.sign(msg, secretKey: sk)
    #expect(Sodium.verify(sig, message: msg, publicKey: pk))
    var tampered = msg
    tampered[0] ^= 1
    #expect(!Sodium.verify(sig, message: tampered, publicKey: pk))
  }
}
