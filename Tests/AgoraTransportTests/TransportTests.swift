import AgoraCrypto
import AgoraTestSupport
@testable import AgoraTransport
import AgoraWire
import Foundation
import Testing

/// Parties with real keys for tests over 127.0.0.1.
struct Federation {
  let coordinator: Identity
  let alice: Identity
  let mallory: Identity
  let registry: EnrolmentRegistry
  let dir: String
  /// Each test federation has its own libzmq context, so its ZAP handler's inproc endpoint is its own
  /// even when test suites run in parallel.
  let context = ZMQContext(ioThreads: 1)

  init() throws {
    dir = NSTemporaryDirectory() + "agora-fed-\(UUID().uuidString)"
    coordinator = try Identity.generate(in: dir + "/coord", name: "Coordinator", institution: "C", contact: "", coordinator: true)
    alice = try Identity.generate(in: dir + "/alice", name: "Alice University", institution: "A", contact: "", coordinator: false)
    mallory = try Identity.generate(in: dir + "/mallory", name: "Mallory", institution: "M", contact: "", coordinator: false)
    registry = EnrolmentRegistry(cards: [alice.card])
  }

  func keys(_ id: Identity) -> CurveKeys { CurveKeys(publicKey: id.card.curvePublic, secretKey: id.curveSecret) }

  /// The coordinator's side on 127.0.0.1: its ZAP handler (admitting the registry's cards) and a CURVE server.
  func coordinatorServer() throws -> (ZAPHandler, Endpoint) {
    let zap = ZAPHandler(registry: registry)
    try zap.start(context: context)
    do {
      return (zap, try Endpoint.server(bind: "tcp://127.0.0.1:*", keys: keys(coordinator), context: context))
    } catch {
      zap.stop()
      throw error
    }
  }

  /// `id`'s client of `server`, knowing the coordinator's real key.
  func client(_ id: Identity, of server: Endpoint) throws -> Endpoint {
    try Endpoint.client(connect: server.boundEndpoint, serverKey: coordinator.card.curvePublic, keys: keys(id))
  }
  func cleanup() { try? FileManager.default.removeItem(atPath: dir) }
}

final class LogLines: @unchecked Sendable {
  private let lock = NSLock()
  private var lines: [String] = []
  func add(_ s: String) { lock.lock(); lines.append(s); lock.unlock() }
  var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}

@Suite(.serialized) struct TransportTests {
  @Test func enrolledNodeGetsASessionAndUnenrolledKeyGetsNothing() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let log = LogLines()
    let zap = ZAPHandler(registry: f.registry) { log.add($0) }
    try zap.start(context: f.context)
    defer { zap.stop() }
    let server = try Endpoint.server(bind: "tcp://127.0.0.1:*", keys: f.keys(f.coordinator), context: f.context)
    defer { server.close() }
    let addr = server.boundEndpoint
    #expect(addr.hasPrefix("tcp://127.0.0.1:"))

    let alice = try Endpoint.client(connect: addr, serverKey: f.coordinator.card.curvePublic, keys: f.keys(f.alice))
    defer { alice.close() }
    alice.send(.join(name: "Alice University", software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: .forTests))
    let got = try #require(server.receive(timeout: 5))
    #expect(try got.message.get() == .join(name: "Alice University", software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: .forTests))
    #expect(got.userID == f.alice.card.fingerprint, "ZAP sets the session's User-Id to the node's fingerprint")
    server.send(.heartbeat, to: got.peer)
    #expect(try alice.receive(timeout: 5)?.message.get() == .heartbeat)

    // Mallory's key is not enrolled: no session, no message reaches the coordinator, and the refusal is logged.
    let mallory = try Endpoint.client(connect: addr, serverKey: f.coordinator.card.curvePublic, keys: f.keys(f.mallory))
    defer { mallory.close() }
    mallory.send(.join(name: "Mallory", software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: .forTests))
    #expect(server.receive(timeout: 1.5) == nil)
    #expect(log.all.contains { $0.contains("curve_public = \"\(f.mallory.card.curvePublicZ85)\"") && $0.contains("127.0.0.1") },
            "refusal logged with the key as the stranger's card shows it, and the address: \(log.all)")

    // A client that does not know the real server key hears nothing (CURVE fails in the handshake).
    let wrong = try Sodium.boxKeypair()
    let lost = try Endpoint.client(connect: addr, serverKey: wrong.publicKey, keys: f.keys(f.alice))
    defer { lost.close() }
    lost.send(.heartbeat)
    #expect(server.receive(timeout: 1.5) == nil)
  }

  /// A burst of messages to one node beyond its queue's high-water mark (a WELCOME for each of the JOINs a node
  /// sent while the coordinator was busy) does not drop what follows: the announcement after the burst arrives,
  /// everything in order (issue 31, probe 9: a one-node federation hung, its ROUND dropped on a full queue).
  @Test func aBurstBeyondTheHighWaterMarkLosesNothing() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server) = try f.coordinatorServer()
    defer { zap.stop(); server.close() }
    let alice = try f.client(f.alice, of: server)
    defer { alice.close() }
    alice.send(.heartbeat)
    let peer = try #require(server.receive(timeout: 5)).peer
    let burst = 3000
    for i in 0..<burst { server.send(.ack(transfer: UInt64(i), next: 0, credit: 1), to: peer) }
    server.send(.leave(kind: .session, reason: "after the burst"), to: peer)
    var next: UInt64 = 0
    var last: Message? = nil
    while last == nil, let m = alice.receive(timeout: 10) {
      switch try m.message.get() {
      case .ack(let t, _, _):
        #expect(t == next, "in order")
        next = t + 1
      case let other: last = other
      }
    }
    #expect(next == UInt64(burst), "every message of the burst arrived")
    #expect(last == .leave(kind: .session, reason: "after the burst"), "the message after the burst arrived")
    #expect(server.dropped == 0)
  }

  @Test func revokedKeyIsRefusedOnReconnect() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server) = try f.coordinatorServer()
    defer { zap.stop(); server.close() }
    let a1 = try f.client(f.alice, of: server)
    a1.send(.heartbeat)
    #expect(server.receive(timeout: 5) != nil)
    a1.close()
    f.registry.revoke(fingerprint: f.alice.card.fingerprint)
    #expect(f.registry.isRevoked(f.alice.card.fingerprint))
    let a2 = try f.client(f.alice, of: server)
    defer { a2.close() }
    a2.send(.heartbeat)
    #expect(server.receive(timeout: 1.5) == nil)
  }

  @Test func malformedFramesArriveAsTypedErrors() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server) = try f.coordinatorServer()
    defer { zap.stop(); server.close() }
    let a = try f.client(f.alice, of: server)
    defer { a.close() }
    a.sendFrames([[1, 2, 3]])
    a.sendFrames([Wire.versionFrame, [0x7F]])
    a.sendFrames([[0x41, 0x47, 0x52, 0x09], [0x0A]])
    var errors: [WireError] = []
    for _ in 0..<3 {
      let r = try #require(server.receive(timeout: 5))
      if case .failure(let e) = r.message { errors.append(e) }
    }
    #expect(errors == [.frameCount(1), .unknownType(0x7F), .unsupportedVersion(9)])
  }
}
