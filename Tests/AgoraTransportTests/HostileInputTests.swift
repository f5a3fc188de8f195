import AgoraCrypto
import AgoraTestSupport
@testable import AgoraTransport
import AgoraWire
import Foundation
import Testing

/// Resident memory of this process in bytes.
func residentBytes() -> Int {
  guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
  let f = s.split(separator: " ")
  return (Int(f[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Opens a raw TCP connection to 127.0.0.1:port and writes `bytes` (no ZeroMQ, no CURVE).
func rawTCP(port: UInt16, _ bytes: [UInt8]) {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { return }
  defer { close(fd) }
  var addr = sockaddr_in()
  addr.sin_family = sa_family_t(AF_INET)
  addr.sin_port = port.bigEndian
  addr.sin_addr.s_addr = inet_addr("127.0.0.1")
  let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
  guard ok == 0 else { return }
  _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
}

@Suite(.serialized) struct HostileInputTests {
  @Test func coordinatorKeepsServingAnEnrolledNodeUnderGarbage() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let bob = try Identity.generate(in: f.dir + "/bob", name: "Bob (misbehaving but enrolled)", institution: "B", contact: "", coordinator: false)
    f.registry.enrol(bob.card)
    let zap = ZAPHandler(registry: f.registry)
    try zap.start(context: f.context)
    defer { zap.stop() }
    var settings = TransportSettings()
    settings.maxMessageBytes = 2 << 20
    let server = try Endpoint.server(bind: "tcp://127.0.0.1:*", keys: f.keys(f.coordinator), settings: settings, context: f.context)
    defer { server.close() }
    let port = UInt16(server.boundEndpoint.split(separator: ":").last!)!
    let receiver = UploadReceiver(context: .init(federation: "test-fed", round: 3, baseHash: [UInt8](repeating: 7, count: 32),
                                                 aggregationPublic: f.coordinator.card.aggregationPublic!, aggregationSecret: f.coordinator.aggregationSecret!),
                                  registry: f.registry)
    // One update per node and round: each of Alice's uploads is for the next round, which the loop opens when
    // its UPLOAD_BEGIN arrives (on the loop's thread, which owns the receiver).
    let loop = CoordinatorLoop(server: server, receiver: receiver) { m, ep in
      if case .success(.uploadBegin(_, let round, _, _)) = m.message, m.userID == f.alice.card.fingerprint, round > receiver.context.round {
        receiver.reset(endpoint: ep)
        receiver.context.round = round
      }
    }
    defer { loop.finish() }
    let alice = try f.client(f.alice, of: server)
    defer { alice.close() }

    var g = SplitMix(seed: 77)
    let data = (0..<300_000).map { _ in UInt8.random(in: 0...255, using: &g) }
    func upload(_ t: UInt64) throws {
      let s = try EnvelopeSealer(context: .init(federation: "test-fed", round: t + 2, baseHash: [UInt8](repeating: 7, count: 32), nodeID: f.alice.card.nodeID),
                                 payloadLength: UInt64(data.count), chunkSize: 32 << 10, recipient: f.coordinator.card.aggregationPublic!,
                                 signingSecretKey: f.alice.signSecret)
      _ = try UploadSender(endpoint: alice, transfer: t, round: t + 2).send(sealer: s, tokens: 1, steps: 1, loss: 1) { i in
        Array(data[(i * (32 << 10))..<min(data.count, (i + 1) * (32 << 10))])
      }
    }
    try upload(1)  // warm-up: buffers and caches reach their working size
    let before = residentBytes()

    // Bob sends garbage through a real CURVE session, and strangers write random bytes to the port.
    let bobEnd = try Endpoint.client(connect: server.boundEndpoint, serverKey: f.coordinator.card.curvePublic, keys: f.keys(bob))
    defer { bobEnd.close() }
    let hostileDone = ManagedAtomicFlag()
    let hostile = Thread {
      defer { hostileDone.set() }
      var r = SplitMix(seed: 5)
      for i in 0..<400 {
        let n = Int.random(in: 0...3000, using: &r)
        let junk = (0..<n).map { _ in UInt8.random(in: 0...255, using: &r) }
        switch i % 5 {
        case 0: bobEnd.sendFrames([junk])                                   // not Agora at all
        case 1: bobEnd.sendFrames([Wire.versionFrame, Array(junk.prefix(3))])  // truncated body
        case 2: bobEnd.sendFrames([Wire.versionFrame, [0x07, 1, 2], junk + [1]])  // chunk of a transfer that does not exist
        case 3: bobEnd.sendFrames([Wire.versionFrame, [0x06] + junk])       // upload begin with lying lengths
        default: rawTCP(port: port, junk)                                   // a stranger without ZeroMQ or keys
        }
        if i % 100 == 0 { bobEnd.sendFrames([Wire.versionFrame, [0x0A], [UInt8](repeating: 0, count: 3 << 20)]) }  // oversized
      }
    }
    hostile.start()
    var t: UInt64 = 2
    while !hostileDone.isSet && t < 300 {  // Alice keeps uploading for as long as the attack lasts
      try upload(t)
      t += 1
    }
    try upload(t)
    #expect(loop.completed.count == Int(t), "every one of Alice's \(t) updates got through")
    waitUntil(5) { loop.malformed >= 50 }
    #expect(loop.malformed >= 50, "the garbage reached the coordinator: \(loop.malformed) malformed messages")
    let after = residentBytes()
    #expect(after - before < 40 << 20, "resident memory grew by \((after - before) >> 20) MiB")
  }
}

/// A seeded generator for the tests' random bytes.
struct SplitMix: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
