import AgoraCrypto
import AgoraTestSupport
@testable import AgoraTransport
import AgoraWire
import Foundation
import Testing

/// An upload receiver on a `ServerLoop`, as the coordinator runs it, and its consumer: it hashes every chunk
/// and keeps every verified update. A test may place chunks (`place`), or refuse updates (`refuse`).
final class CoordinatorLoop: UploadConsumer, @unchecked Sendable {
  let receiver: UploadReceiver
  let lock = NSLock()
  var hasher = Sodium.Hasher()
  var completed: [UploadReceiver.Completed] = []
  var chunksSeen = 0
  var malformed = 0
  /// Chunk indices to lose once (as if the connection dropped them), to exercise resumption.
  var loseOnce: Set<UInt32> = []
  /// Where chunks go (nil: the receiver's scratch), and what sees each chunk's plaintext.
  var place: (Int) -> UnsafeMutableRawBufferPointer? = { _ in nil }
  var seeChunk: (UnsafeRawBufferPointer) -> Void = { _ in }
  /// Throws to refuse a verified update.
  var refuse: (UploadReceiver.Completed) throws -> Void = { _ in }
  private var loop: ServerLoop? = nil

  /// `before` sees every inbound message before the receiver does (on the loop's thread).
  init(server: Endpoint, receiver: UploadReceiver, before: @escaping (Inbound, Endpoint) -> Void = { _, _ in }) {
    self.receiver = receiver
    receiver.consumer = self
    loop = ServerLoop(server: server) { [unowned self] m, s in
      if case .failure = m.message { lock.lock(); malformed += 1; lock.unlock() }
      if case .success(.uploadChunk(_, let index, _)) = m.message, loseOnce.remove(index) != nil { return }
      before(m, s)
      receiver.handle(m, endpoint: s)
    }
  }

  func destination(node: String, chunk: Int, bytes: Int) -> UnsafeMutableRawBufferPointer? { place(bytes) }
  func chunk(node: String, index: Int, plaintext: UnsafeRawBufferPointer) throws {
    seeChunk(plaintext)
    hasher.update(plaintext)
    chunksSeen += 1
  }
  func completed(_ c: UploadReceiver.Completed) throws {
    try refuse(c)
    lock.lock(); completed.append(c); lock.unlock()
  }

  var count: Int { lock.lock(); defer { lock.unlock() }; return completed.count }
  func swapServer(_ s: Endpoint) { loop?.swapServer(s) }
  func finish() { loop?.finish() }
}

@Suite(.serialized) struct UploadTests {
  func setup(_ f: Federation, round: UInt64 = 3) throws -> (ZAPHandler, Endpoint, UploadReceiver) {
    let zap = ZAPHandler(registry: f.registry)
    try zap.start(context: f.context)
    let server = try Endpoint.server(bind: "tcp://127.0.0.1:*", keys: f.keys(f.coordinator), context: f.context)
    let ctx = UploadReceiver.Context(federation: "test-fed", round: round, baseHash: [UInt8](repeating: 7, count: 32),
                                     aggregationPublic: f.coordinator.card.aggregationPublic!, aggregationSecret: f.coordinator.aggregationSecret!)
    return (zap, server, UploadReceiver(context: ctx, registry: f.registry))
  }

  func payload(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) } }

  func sealer(_ f: Federation, bytes: Int, chunk: Int, round: UInt64 = 3, suite: EnvelopeSuite = .preferred) throws -> EnvelopeSealer {
    try EnvelopeSealer(context: .init(federation: "test-fed", round: round, baseHash: [UInt8](repeating: 7, count: 32), nodeID: f.alice.card.nodeID),
                       payloadLength: UInt64(bytes), chunkSize: chunk, recipient: f.coordinator.card.aggregationPublic!, signingSecretKey: f.alice.signSecret,
                       suite: suite)
  }

  /// Each cipher suite's update streams through the coordinator's receiver whole (a receiver opens both).
  @Test(arguments: EnvelopeSuite.allCases) func streamedSealedUpdateArrivesIntact(suite: EnvelopeSuite) throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, receiver) = try setup(f)
    defer { zap.stop(); server.close() }
    let loop = CoordinatorLoop(server: server, receiver: receiver)
    defer { loop.finish() }
    let client = try f.client(f.alice, of: server)
    defer { client.close() }
    let data = payload(3_000_000), chunk = 64 << 10
    let s = try sealer(f, bytes: data.count, chunk: chunk, suite: suite)
    #expect(s.head.suite == suite)
    let r = try UploadSender(endpoint: client, transfer: 1, round: 3).send(sealer: s, tokens: 1234, steps: 10, loss: 2.5) { i in
      Array(data[(i * chunk)..<min(data.count, (i + 1) * chunk)])
    }
    #expect(r.chunks == 46)
    #expect(loop.completed.count == 1)
    #expect(loop.completed.first?.tokens == 1234)
    #expect(loop.completed.first?.node == f.alice.card.fingerprint)
    #expect(loop.hasher.finish() == Sodium.blake2b(data))
  }

  /// With a destination, each chunk is decrypted where the consumer wants it (the coordinator's staging
  /// buffer): the plaintext handed to onChunk is that memory, and it ends up holding the whole update.
  @Test func chunksAreDecryptedIntoTheGivenDestination() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, receiver) = try setup(f)
    defer { zap.stop(); server.close() }
    let data = payload(1_000_003), chunk = 64 << 10
    let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: data.count, alignment: 64)
    defer { staging.deallocate() }
    nonisolated(unsafe) var filled = 0, inPlace = 0
    let loop = CoordinatorLoop(server: server, receiver: receiver)
    defer { loop.finish() }
    loop.place = { n in filled + n <= staging.count ? UnsafeMutableRawBufferPointer(rebasing: staging[filled..<(filled + n)]) : nil }
    loop.seeChunk = { plain in
      if plain.baseAddress == UnsafeRawPointer(staging.baseAddress! + filled) { inPlace += 1 }
      filled += plain.count
    }
    let client = try f.client(f.alice, of: server)
    defer { client.close() }
    let s = try sealer(f, bytes: data.count, chunk: chunk)
    let r = try UploadSender(endpoint: client, transfer: 2, round: 3).send(sealer: s, tokens: 1, steps: 1, loss: 1) { i in
      Array(data[(i * chunk)..<min(data.count, (i + 1) * chunk)])
    }
    #expect(r.chunks == 16)
    #expect(loop.completed.count == 1)
    #expect(inPlace == 16)
    #expect(filled == data.count)
    #expect(Array(staging) == data)
  }

  @Test func transferResumesAfterTheCoordinatorSocketRestarts() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, receiver) = try setup(f)
    defer { zap.stop() }
    let addr = server.boundEndpoint
    let loop = CoordinatorLoop(server: server, receiver: receiver)
    defer { loop.finish() }
    loop.loseOnce = [30, 31]  // and chunks 30 and 31 are lost on the way once
    var settings = TransportSettings()
    settings.reconnectMillis = 50
    settings.reconnectMaxMillis = 200
    let client = try Endpoint.client(connect: addr, serverKey: f.coordinator.card.curvePublic, keys: f.keys(f.alice), settings: settings)
    defer { client.close() }
    let data = payload(2_000_000), chunk = 32 << 10
    let s = try sealer(f, bytes: data.count, chunk: chunk)
    var sender = UploadSender(endpoint: client, transfer: 9, round: 3)
    sender.ackTimeout = 1
    var restarted = false
    let r = try sender.send(sealer: s, tokens: 1, steps: 1, loss: 1) { i in
      if i == 20 && !restarted {
        // The coordinator's socket goes away mid-transfer (its receiver state survives) and comes back on the same port.
        restarted = true
        server.close()
        // libzmq closes the old listener asynchronously: retry the bind briefly (bounded: 3 s).
        var again: Endpoint? = nil
        waitUntil(3, every: 0.05) {
          again = try? Endpoint.server(bind: addr, keys: f.keys(f.coordinator), context: f.context)
          return again != nil
        }
        guard let again else { throw TransferError.timeout("could not bind \(addr) again") }
        loop.swapServer(again)
      }
      return Array(data[(i * chunk)..<min(data.count, (i + 1) * chunk)])
    }
    #expect(restarted)
    #expect(r.resends > 0, "lost chunks were sent again after the resume")
    #expect(loop.completed.count == 1)
    #expect(loop.hasher.finish() == Sodium.blake2b(data))
  }

  @Test func wrongRoundIsRejectedWithATypedError() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, receiver) = try setup(f, round: 3)
    defer { zap.stop(); server.close() }
    let loop = CoordinatorLoop(server: server, receiver: receiver)
    defer { loop.finish() }
    let client = try f.client(f.alice, of: server)
    defer { client.close() }
    let s = try sealer(f, bytes: 5000, chunk: 1024, round: 4)
    #expect(throws: TransferError.rejected(code: ErrorCode.wrongRound.rawValue, message: "round 4 is not the current round 3")) {
      _ = try UploadSender(endpoint: client, transfer: 2, round: 4).send(sealer: s, tokens: 0, steps: 0, loss: 0) { _ in [UInt8](repeating: 0, count: 1024) }
    }
  }
}

extension UploadTests {
  /// A round's announcement that arrives while an upload reads its acknowledgements stays queued for the
  /// node's round loop (the upload used to take it and drop it, and the node then missed the round).
  @Test func anAnnouncementDuringAnUploadWaitsForTheRoundLoop() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, receiver) = try setup(f)
    defer { zap.stop(); server.close() }
    let announcement = Message.round(round: 4, baseHash: [UInt8](repeating: 9, count: 32), innerSteps: 50, batch: 8, learningRateBits: Float(1e-3).bitPattern,
                                     deadlineMillis: 1, modelBytes: 4096, patchFrom: [UInt8](repeating: 7, count: 32), patchHash: [UInt8](repeating: 8, count: 32),
                                     shardHash: [UInt8](repeating: 0, count: 32), version: 4, signature: [UInt8](repeating: 1, count: 64))
    let told = ManagedAtomicFlag()
    let loop = CoordinatorLoop(server: server, receiver: receiver) { m, s in
      if case .success(.uploadChunk(_, 0, _)) = m.message, !told.isSet {
        told.set()
        s.send(.heartbeat, to: m.peer)
        s.send(announcement, to: m.peer)
      }
    }
    defer { loop.finish() }
    let client = try f.client(f.alice, of: server)
    defer { client.close() }
    let data = payload(1_000_000), chunk = 64 << 10
    _ = try UploadSender(endpoint: client, transfer: 1, round: 3).send(sealer: try sealer(f, bytes: data.count, chunk: chunk), tokens: 1, steps: 1, loss: 1) { i in
      Array(data[(i * chunk)..<min(data.count, (i + 1) * chunk)])
    }
    #expect(told.isSet && loop.count == 1)
    #expect(try client.receive(timeout: 2)?.message.get() == announcement)
    #expect(client.receive(timeout: 0.2) == nil, "the heartbeat before it was the upload's to take")
  }

  /// `receive(timeout:where:)` takes the first message it accepts and leaves the others queued, in order.
  @Test func aSelectiveReceiveKeepsTheOthersInOrder() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, _) = try setup(f)
    defer { zap.stop(); server.close() }
    let client = try f.client(f.alice, of: server)
    defer { client.close() }
    let sent: [Message] = [.heartbeat, .error(code: 1, message: "a", subject: .none), .heartbeat, .error(code: 2, message: "b", subject: .none)]
    for m in sent { client.send(m) }
    func isError(_ i: Inbound) -> Bool { if case .success(.error) = i.message { return true }; return false }
    #expect(try server.receive(timeout: 5, where: isError)?.message.get() == sent[1])
    #expect(try server.receive(timeout: 5, where: isError)?.message.get() == sent[3])
    #expect(server.receive(timeout: 0.3, where: isError) == nil)
    #expect(try server.receive(timeout: 1)?.message.get() == .heartbeat)
    #expect(try server.receive(timeout: 1)?.message.get() == .heartbeat)
    #expect(server.receive(timeout: 0.2) == nil)
    // A message left at the head while 1,500 others are taken behind it (the queue is compacted meanwhile).
    // (In batches of 30: the sockets' high-water marks are 64 messages.)
    client.send(.error(code: 3, message: "kept", subject: .none))
    var taken = 0
    for _ in 0..<50 {
      for _ in 0..<30 { client.send(.heartbeat) }
      for _ in 0..<30 where server.receive(timeout: 5, where: { !isError($0) }) != nil { taken += 1 }
    }
    #expect(taken == 1500)
    #expect(try server.receive(timeout: 1)?.message.get() == .error(code: 3, message: "kept", subject: .none))
  }
}

extension UploadTests {
  /// Two nodes upload at the same time: with `maxActive` 2 both stream at once, with 1 the second waits for the
  /// first (zero credit) and then streams; every update arrives whole either way.
  @Test(arguments: [1, 2])
  func uploadsStreamAtOnceUpToTheReceiversLimit(limit: Int) throws {
    let f = try Federation()
    defer { f.cleanup() }
    let bob = try Identity.generate(in: f.dir + "/bob", name: "Bob Institute", institution: "B", contact: "", coordinator: false)
    let registry = EnrolmentRegistry(cards: [f.alice.card, bob.card])
    let zap = ZAPHandler(registry: registry)
    try zap.start(context: f.context)
    let server = try Endpoint.server(bind: "tcp://127.0.0.1:*", keys: f.keys(f.coordinator), context: f.context)
    defer { zap.stop(); server.close() }
    let receiver = UploadReceiver(context: .init(federation: "test-fed", round: 3, baseHash: [UInt8](repeating: 7, count: 32),
                                                 aggregationPublic: f.coordinator.card.aggregationPublic!, aggregationSecret: f.coordinator.aggregationSecret!),
                                  registry: registry)
    receiver.maxActive = limit
    // The first chunk is not handled until both nodes' UPLOAD_BEGIN has arrived (bounded: 10 s). Arrivals are counted
    // in the endpoint's I/O thread: the loop would see a BEGIN queued behind the chunk it is holding only after it,
    // and every chunk would wait the whole bound (four of them took 40 s on a loaded machine, past the sender's retries).
    let begun = Locked(0)
    server.divert { inbound in
      if case .success(.uploadBegin) = inbound.message { begun.value += 1 }
      return false
    }
    let loop = CoordinatorLoop(server: server, receiver: receiver) { m, _ in
      if case .success(.uploadChunk) = m.message {
        waitUntil(10, every: 0.01) { begun.value >= 2 }
      }
    }
    defer { loop.finish() }
    let data = payload(2_000_000), chunk = 64 << 10
    let results = LogLines()
    let group = DispatchGroup()
    for (id, name) in [(f.alice, "alice"), (bob, "bob")] {
      group.enter()
      Thread {
        defer { group.leave() }
        do {
          let client = try Endpoint.client(connect: server.boundEndpoint, serverKey: f.coordinator.card.curvePublic,
                                           keys: CurveKeys(publicKey: id.card.curvePublic, secretKey: id.curveSecret))
          defer { client.close() }
          let sealer = try EnvelopeSealer(context: .init(federation: "test-fed", round: 3, baseHash: [UInt8](repeating: 7, count: 32), nodeID: id.card.nodeID),
                                          payloadLength: UInt64(data.count), chunkSize: chunk, recipient: f.coordinator.card.aggregationPublic!,
                                          signingSecretKey: id.signSecret)
          var sender = UploadSender(endpoint: client, transfer: 1, round: 3)
          sender.ackTimeout = 5
          _ = try sender.send(sealer: sealer, tokens: 1, steps: 1, loss: 1) { i in Array(data[(i * chunk)..<min(data.count, (i + 1) * chunk)]) }
          results.add(name)
        } catch {
          results.add("\(name): \(error)")
        }
      }.start()
    }
    #expect(group.wait(timeout: .now() + 60) == .success)
    #expect(results.all.sorted() == ["alice", "bob"], "\(results.all)")
    #expect(loop.count == 2)
    #expect(receiver.peakActive == limit)
  }
}
