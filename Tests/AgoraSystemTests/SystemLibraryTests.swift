import Testing
@testable import AgoraCrypto
@testable import AgoraTransport
import AgoraTensor

/// The three system libraries are linked and have the features Agora relies on.
@Suite struct SystemLibraryTests {
  @Test func zeroMQHasCurve() {
    #expect(ZeroMQ.version.major == 4)
    #expect(ZeroMQ.hasCurve)
  }

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

  @Test func openBLASIsLinked() {
    #expect(!BLAS.config.isEmpty)
  }
}
