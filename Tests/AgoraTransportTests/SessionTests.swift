import AgoraCrypto
import AgoraTestSupport
@testable import AgoraTransport
import AgoraWire
import Foundation
import Testing

/// A coordinator's session table and blob server on a `ServerLoop`, as the coordinator service runs them.
final class SessionLoop: @unchecked Sendable {
  let sessions: SessionTable
  let blobs: BlobServer
  let lock = NSLock()
  var forwarded: [Message] = []
  var dropped: [String] = []
  private var loop: ServerLoop? = nil

  init(server: Endpoint, sessions: SessionTable, blobs: BlobServer) {
    self.sessions = sessions
    self.blobs = blobs
    loop = ServerLoop(server: server) { [unowned self] m, server in
      switch sessions.handle(m) {
      case .handled: break
      case .dropped(let why): lock.lock(); dropped.append(why); lock.unlock()
      case .forward:
        if !blobs.handle(m, endpoint: server), case .success(let msg) = m.message { lock.lock(); forwarded.append(msg); lock.unlock() }
      }
    }
  }

  func finish() { loop?.finish() }
}

@Suite(.serialized) struct SessionTests {
  func start(_ f: Federation) throws -> (ZAPHandler, Endpoint, SessionLoop) {
    let zap = ZAPHandler(registry: f.registry)
    try zap.start(context: f.context)
    let server = try Endpoint.server(bind: "tcp://127.0.0.1:*", keys: f.keys(f.coordinator), context: f.context)
    var p = SessionTable.Parameters(federation: "test-fed", aggregationKey: f.coordinator.card.aggregationPublic!)
    p.heartbeatMillis = 100
    p.liveness = 3
    let loop = SessionLoop(server: server, sessions: SessionTable(parameters: p, registry: f.registry, endpoint: server), blobs: BlobServer(chunkSize: 64 << 10))
    return (zap, server, loop)
  }

  func client(_ f: Federation, _ server: Endpoint) throws -> Endpoint {
    try f.client(f.alice, of: server)
  }

  @Test func joinWelcomeHeartbeatAndExpiry() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, loop) = try start(f)
    defer { loop.finish(); server.close(); zap.stop() }
    let a = try client(f, server)
    defer { a.close() }
    a.send(.heartbeat)
    #expect(try a.receive(timeout: 5)?.message.get() == .error(code: ErrorCode.notJoined.rawValue, message: "send JOIN first", subject: .none))
    a.send(.join(name: "Alice University", software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: .forTests))
    let w = try #require(a.receive(timeout: 5))
    guard case .success(.welcome(let fed, let hb, let live, _, _, let key)) = w.message else { Issue.record("\(w.message)"); return }
    #expect(fed == "test-fed" && hb == 100 && live == 3 && key == f.coordinator.card.aggregationPublic!)
    a.send(.heartbeat)
    #expect(try a.receive(timeout: 5)?.message.get() == .heartbeat)
    #expect(loop.sessions.session(f.alice.card.fingerprint)?.name == "Alice University")
    // Silent for more than liveness × heartbeat (0.3 s): expired — at a clock 0.5 s on, not after a real wait.
    #expect(loop.sessions.expire(now: Date().addingTimeInterval(0.5)).map(\.fingerprint) == [f.alice.card.fingerprint])
    #expect(loop.sessions.live.isEmpty)
  }

  /// A coordinator busy for longer than the liveness limit (a 1B model's step, a hash) reads its queue late. A
  /// joined node's heartbeats are answered meanwhile (in the endpoint's I/O thread: they never wait behind its work,
  /// so they cannot fill the inbox and stall the connection), and any message that arrived from the node is a sign
  /// of life, read or not: silence counts from the last arrival on its connection.
  @Test func aBusyCoordinatorKeepsItsLiveNodes() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, loop) = try start(f)
    defer { server.close(); zap.stop() }
    let a = try client(f, server)
    defer { a.close() }
    a.send(.join(name: "Alice University", software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: .forTests))
    guard case .success(.welcome) = try #require(a.receive(timeout: 5)).message else { Issue.record("no WELCOME"); return }
    loop.finish()  // the coordinator is busy from here on: nothing more is read
    let fp = f.alice.card.fingerprint
    let peer = try #require(loop.sessions.session(fp)).peer
    // Its last read message was 10 s ago, as after a long step.
    loop.sessions.touch(fp, peer: peer, now: Date().addingTimeInterval(-10))
    for _ in 0..<3 {
      a.send(.heartbeat)
      #expect(try a.receive(timeout: 5)?.message.get() == .heartbeat)
    }
    #expect(try #require(loop.sessions.session(fp)).lastSeen > Date().addingTimeInterval(-5), "the heartbeat is a sign of life at once")
    // A request (not a heartbeat) waits in the queue unread: it keeps the session too.
    loop.sessions.touch(fp, peer: peer, now: Date().addingTimeInterval(-10))
    let before = try #require(server.lastArrival(from: peer))
    a.send(.fetch(hash: [UInt8](repeating: 7, count: 32), fromChunk: 0, credit: 1))
    #expect(waitUntil(5, every: 0.001) { (server.lastArrival(from: peer) ?? before) > before }, "the request arrived")
    #expect(loop.sessions.expire().isEmpty, "a request waiting in the queue keeps the session")
    #expect(loop.sessions.session(fp) != nil)
    // Silent since that request for longer than the limit (0.3 s): expired.
    #expect(loop.sessions.expire(now: Date().addingTimeInterval(0.5)).map(\.fingerprint) == [fp])
  }

  /// A node whose terms differ is refused at JOIN with ERROR(13) naming the difference; the name a session
  /// shows is the enrolment card's, whatever JOIN says.
  @Test func joinChecksTermsAndTakesTheNameFromTheCard() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let zap = ZAPHandler(registry: f.registry)
    try zap.start(context: f.context)
    let server = try Endpoint.server(bind: "tcp://127.0.0.1:*", keys: f.keys(f.coordinator), context: f.context)
    var p = SessionTable.Parameters(federation: "test-fed", aggregationKey: f.coordinator.card.aggregationPublic!)
    p.terms = .forTests
    let loop = SessionLoop(server: server, sessions: SessionTable(parameters: p, registry: f.registry, endpoint: server), blobs: BlobServer(chunkSize: 64 << 10))
    defer { loop.finish(); server.close(); zap.stop() }
    let a = try client(f, server)
    defer { a.close() }
    var wrong = TrainingTerms.forTests
    wrong.batch = 64
    a.send(.join(name: "Alice University", software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: wrong))
    guard case .success(.error(let code, let text, .none)) = try #require(a.receive(timeout: 5)).message else { Issue.record("no ERROR"); return }
    #expect(code == ErrorCode.termsMismatch.rawValue && text.contains("batch: node 64, federation 8"), "\(text)")
    #expect(loop.sessions.live.isEmpty)
    a.send(.join(name: "Evil\n    9 | forged | row\u{1b}[2J", software: "x\ny", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: .forTests))
    guard case .success(.welcome) = try #require(a.receive(timeout: 5)).message else { Issue.record("no WELCOME"); return }
    #expect(loop.sessions.session(f.alice.card.fingerprint)?.name == "Alice University")
    #expect(loop.sessions.session(f.alice.card.fingerprint)?.software == "x\\u{a}y")
  }

  @Test func revokingALiveSessionClosesItAndDropsWhatFollows() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, loop) = try start(f)
    defer { loop.finish(); server.close(); zap.stop() }
    let a = try client(f, server)
    defer { a.close() }
    a.send(.join(name: "Alice University", software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: .forTests))
    _ = try #require(a.receive(timeout: 5))
    f.registry.revoke(fingerprint: f.alice.card.fingerprint)
    #expect(try a.receive(timeout: 5)?.message.get() == .error(code: ErrorCode.revoked.rawValue, message: "the key of Alice University was revoked", subject: .none))
    a.send(.round(round: 1, baseHash: [UInt8](repeating: 0, count: 32), innerSteps: 1, batch: 1, learningRateBits: 0, deadlineMillis: 0, modelBytes: 0, patchFrom: [UInt8](repeating: 0, count: 32), patchHash: [UInt8](repeating: 0, count: 32), shardHash: [UInt8](repeating: 0, count: 32), version: 0, signature: [UInt8](repeating: 0, count: 64)))
    // The loop says it dropped the message (the event), and forwarded nothing.
    #expect(waitUntil(5) { loop.dropped.contains { $0.contains("revoked") } })
    #expect(loop.forwarded.isEmpty)
  }

  @Test func modelFetchByContentHashIsVerified() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, loop) = try start(f)
    defer { loop.finish(); server.close(); zap.stop() }
    let blob = (0..<1_000_003).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 11) }
    let path = f.dir + "/model.bin"
    FileManager.default.createFile(atPath: path, contents: Data(blob))
    let hash = try loop.blobs.publish(path: path)
    #expect(hash == Sodium.blake2b(blob))
    let a = try client(f, server)
    defer { a.close() }
    a.send(.join(name: "Alice University", software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: .forTests))
    _ = try #require(a.receive(timeout: 5))
    var got: [UInt8] = []
    var fetcher = BlobFetcher(endpoint: a)
    fetcher.credit = 4
    let n = try fetcher.fetch(hash: hash) { got += $0 }
    #expect(n == blob.count && got == blob)
    // Unknown hash: a typed refusal.
    #expect(throws: TransferError.self) { _ = try fetcher.fetch(hash: [UInt8](repeating: 9, count: 32)) { _ in } }
    // The file changes under the server: the server finds it no longer hashes to its name and serves none of
    // it (it used to serve it and leave the check to the node), saying so in a typed refusal.
    var tampered = blob
    tampered[500_000] ^= 1
    FileManager.default.createFile(atPath: path, contents: Data(tampered))
    #expect { _ = try fetcher.fetch(hash: hash) { _ in } } throws: { e in
      guard case TransferError.rejected(let code, let text) = e else { return false }
      return code == ErrorCode.unknownVersion.rawValue && text.contains("corrupt on the coordinator's disk")
    }
    // A rewritten file with the same content is published again and served (its hash checked anew).
    FileManager.default.createFile(atPath: path, contents: Data(blob))
    _ = try loop.blobs.publish(path: path)
    got = []
    #expect(try fetcher.fetch(hash: hash) { got += $0 } == blob.count && got == blob)
    // A file touched but unchanged is checked again and still served.
    let later = Date(timeIntervalSinceNow: 5)
    try FileManager.default.setAttributes([.modificationDate: later], ofItemAtPath: path)
    got = []
    #expect(try fetcher.fetch(hash: hash) { got += $0 } == blob.count && got == blob)
  }
}

extension TrainingTerms {
  /// Terms for sessions whose table checks none (transport-level tests have no model).
  static let forTests = TrainingTerms(tokenizerHash: [UInt8](repeating: 1, count: 32), modelHash: [UInt8](repeating: 2, count: 32),
                                      innerSteps: 10, batch: 8, learningRateBits: Float(1e-3).bitPattern, rounds: 3)
}

/// Invitation connections are rate-limited whoever makes them (SPEC §2.2): at most 10 a minute are admitted.
@Suite struct InvitationAdmissionTests {
  @Test func atMostTenInvitationConnectionsAMinute() {
    let r = EnrolmentRegistry()
    let key = [UInt8](repeating: 7, count: 32)
    #expect(r.admitInvitation(curveKey: key, address: "a").user == nil, "no invitations accepted yet")
    r.acceptInvitations { $0 == key ? "abcd" : nil }
    let t0 = Date()
    for i in 0..<10 { #expect(r.admitInvitation(curveKey: key, address: "a", now: t0.addingTimeInterval(Double(i))).user == "invite:abcd") }
    let refused = r.admitInvitation(curveKey: key, address: "b", now: t0.addingTimeInterval(30))
    #expect(refused.user == nil && refused.why.contains("rate limit"))
    #expect(r.admitInvitation(curveKey: key, address: "c", now: t0.addingTimeInterval(60.5)).user == "invite:abcd", "a minute later")
    #expect(r.admitInvitation(curveKey: [UInt8](repeating: 8, count: 32), address: "a", now: t0.addingTimeInterval(61)).user == nil, "an unknown key")
    #expect(r.invitationAddress("abcd") == "c")
  }
}
