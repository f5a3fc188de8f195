import AgoraCrypto
import AgoraWire
import Foundation
import Testing
@testable import AgoraTransport

/// A coordinator loop on its own thread: reads the server endpoint and feeds the upload receiver.
final class CoordinatorLoop: @unchecked Sendable {
  let receiver: UploadReceiver
  var server: Endpoint
  let stop = ManagedAtomicFlag()
  let done = DispatchSemaphore(value: 0)
  let lock = NSLock()
  var hasher = Sodium.Hasher()
  var completed: [UploadReceiver.Completed] = []
  var chunksSeen = 0
  var malformed = 0
  /// Chunk indices to lose once (as if the connection dropped them), to exercise resumption.
  var loseOnce: Set<UInt32> = []

  /// Called with every inbound message before the receiver sees it (on the loop's thread).
  let before: (Inbound, Endpoint) -> Void

  init(server: Endpoint, receiver: UploadReceiver, before: @escaping (Inbound, Endpoint) -> Void = { _, _ in }) {
    self.server = server
    self.receiver = receiver
    self.before = before
    receiver.onChunk = { [unowned self] _, _, plain in self.hasher.update(plain); self.chunksSeen += 1 }
    receiver.onComplete = { [unowned self] c in self.lock.lock(); self.completed.append(c); self.lock.unlock() }
    Thread { [self] in
      while !stop.isSet {
        lock.lock(); let s = self.server; lock.unlock()
        if let m = s.receive(timeout: 0.05) {
          if case .failure = m.message { lock.lock(); malformed += 1; lock.unlock() }
          if case .success(.uploadChunk(_, let index, _)) = m.message, loseOnce.remove(index) != nil { continue }
          before(m, s)
          receiver.handle(m, endpoint: s)
        }
      }
      done.signal()
    }.start()
  }

  var count: Int { lock.lock(); defer { lock.unlock() }; return completed.count }
  func swapServer(_ s: Endpoint) { lock.lock(); server = s; lock.unlock() }
  func finish() { stop.set(); done.wait() }
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

  func sealer(_ f: Federation, bytes: Int, chunk: Int, round: UInt64 = 3) throws -> EnvelopeSealer {
    try EnvelopeSealer(context: .init(federation: "test-fed", round: round, baseHash: [UInt8](repeating: 7, count: 32), nodeID: f.alice.card.nodeID),
                       payloadLength: UInt64(bytes), chunkSize: chunk, recipient: f.coordinator.card.aggregationPublic!, signingSecretKey: f.alice.signSecret)
  }

  @Test func streamedSealedUpdateArrivesIntact() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, receiver) = try setup(f)
    defer { zap.stop(); server.close() }
    let loop = CoordinatorLoop(server: server, receiver: receiver)
    defer { loop.finish() }
    let client = try Endpoint.client(connect: server.boundEndpoint, serverKey: f.coordinator.card.curvePublic, keys: f.keys(f.alice))
    defer { client.close() }
    let data = payload(3_000_000), chunk = 64 << 10
    let s = try sealer(f, bytes: data.count, chunk: chunk)
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
    receiver.destination = { _, _, n in filled + n <= staging.count ? UnsafeMutableRawBufferPointer(rebasing: staging[filled..<(filled + n)]) : nil }
    let loop = CoordinatorLoop(server: server, receiver: receiver)
    defer { loop.finish() }
    receiver.onChunk = { _, _, plain in
      if plain.baseAddress == UnsafeRawPointer(staging.baseAddress! + filled) { inPlace += 1 }
      filled += plain.count
    }
    let client = try Endpoint.client(connect: server.boundEndpoint, serverKey: f.coordinator.card.curvePublic, keys: f.keys(f.alice))
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
        for _ in 0..<60 where again == nil {
          again = try? Endpoint.server(bind: addr, keys: f.keys(f.coordinator), context: f.context)
          if again == nil { Thread.sleep(forTimeInterval: 0.05) }
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
    let client = try Endpoint.client(connect: server.boundEndpoint, serverKey: f.coordinator.card.curvePublic, keys: f.keys(f.alice))
    defer { client.close() }
    let s = try sealer(f, bytes: 5000, chunk: 1024, round: 4)
    #expect(throws: TransferError.rejected(code: ErrorCode.wrongRound.rawValue, message: "round 4 is not the current round 3")) {
      _ = try UploadSender(endpoint: client, transfer: 2, round: 4).send(sealer: s, tokens: 0, steps: 0, loss: 0) { _ in [UInt8](repeating: 0, count: 1024) }
    }
  }
}
