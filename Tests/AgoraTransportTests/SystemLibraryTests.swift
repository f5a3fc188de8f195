import AgoraTestSupport
@testable import AgoraTransport
import Testing

/// libzmq is linked and has what Agora relies on (CURVE).
@Suite struct ZeroMQLibraryTests {
  @Test func zeroMQHasCurve() {
    #expect(ZeroMQ.version.major == 4)
    #expect(ZeroMQ.hasCurve)
  }
}
