import AgoraCrypto
import AgoraTestSupport
@testable import AgoraTransport
import AgoraWire
import Foundation
import Testing

/// The receiver's rules that keep one enrolled node from breaking a round (issue: robust rounds): one update
/// per node and round, a refused update is final, a node whose session ends frees the upload slot, and an
/// ERROR answers only the transfer it names.
@Suite(.serialized) struct RoundRulesTests {
  let upload = UploadTests()

  func send(_ f: Federation, _ client: Endpoint, transfer: UInt64, id: Identity? = nil, bytes: Int = 200_000, round: UInt64 = 3,
            envelopeRound: UInt64? = nil, chunkPause: Double = 0, stopAt: Int? = nil) throws -> Result<UploadSender.Result, TransferError> {
    let me = id ?? f.alice
    let data = upload.payload(bytes), chunk = 16 << 10
    let s = try EnvelopeSealer(context: .init(federation: "test-fed", round: envelopeRound ?? round, baseHash: [UInt8](repeating: 7, count: 32), nodeID: me.card.nodeID),
                               payloadLength: UInt64(bytes), chunkSize: chunk, recipient: f.coordinator.card.aggregationPublic!, signingSecretKey: me.signSecret)
    var sender = UploadSender(endpoint: client, transfer: transfer, round: round)
    sender.ackTimeout = 1
    sender.maxRetries = 3
    do {
      return .success(try sender.send(sealer: s, tokens: 100, steps: 1, loss: 1) { i in
        if let stop = stopAt, i >= stop { throw TransferError.timeout("the test stops this sender at chunk \(stop)") }
        if chunkPause > 0 { Thread.sleep(forTimeInterval: chunkPause) }  // behaviour: a slow sender
        return Array(data[(i * chunk)..<min(bytes, (i + 1) * chunk)])
      })
    } catch let e as TransferError {
      return .failure(e)
    }
  }

  /// A receiver of round 3 served on a loop, and Alice's client of it, for `body`.
  func withAlice(_ body: (Federation, Endpoint, CoordinatorLoop, UploadReceiver) throws -> Void) throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, receiver) = try upload.setup(f)
    defer { zap.stop(); server.close() }
    let loop = CoordinatorLoop(server: server, receiver: receiver)
    defer { loop.finish() }
    let client = try f.client(f.alice, of: server)
    defer { client.close() }
    try body(f, client, loop, receiver)
  }

  @Test func aSecondUpdateOfANodeForTheSameRoundIsRefusedWhateverItsTransferID() throws {
    try withAlice { f, client, loop, _ in
      #expect(try send(f, client, transfer: 1).get().chunks > 1)
      // The same update again under a new transfer id: refused, with the code a node can act on.
      guard case .failure(.rejected(let code, let text)) = try send(f, client, transfer: 2) else { Issue.record("the replay was accepted"); return }
      #expect(code == ErrorCode.duplicate.rawValue, "\(text)")
      #expect(text.contains("round 3"))
      #expect(loop.count == 1, "the round counted the node once")
      // Resuming the finished transfer is not a second update: it is told the transfer is complete.
      #expect(try send(f, client, transfer: 1).get().chunks > 1)
      #expect(loop.count == 1)
    }
  }

  @Test func aRefusedUpdateIsTheNodesLastWordInTheRound() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, receiver) = try upload.setup(f)
    defer { zap.stop(); server.close() }
    let loop = CoordinatorLoop(server: server, receiver: receiver)
    defer { loop.finish() }
    loop.refuse = { _ in throw TransferError.protocolViolation("refused by the test") }
    let client = try f.client(f.alice, of: server)
    defer { client.close() }
    guard case .failure(.rejected(let first, _)) = try send(f, client, transfer: 1) else { Issue.record("not refused"); return }
    #expect(first == ErrorCode.rejectedUpdate.rawValue)
    guard case .failure(.rejected(let second, _)) = try send(f, client, transfer: 2) else { Issue.record("the retry was taken"); return }
    #expect(second == ErrorCode.duplicate.rawValue)
    // The next round is a new start.
    receiver.reset(endpoint: server)
    receiver.context.round = 4
    loop.refuse = { _ in }
    #expect(throws: Never.self) { try send(f, client, transfer: 3, round: 4).get() }
  }

  /// A stale retry: UPLOAD_BEGIN names the current round but carries an envelope sealed for the previous one. It
  /// is answered wrong round (6), not refused (7), so the node's honest update of the round is still taken
  /// (SPEC §4.1, §5; issue 31, C1).
  @Test func anEnvelopeForAnotherRoundIsAWrongRoundAndCostsTheNodeNothing() throws {
    try withAlice { f, client, loop, _ in
      guard case .failure(.rejected(let code, let text)) = try send(f, client, transfer: 1, round: 3, envelopeRound: 2) else {
        Issue.record("an envelope of round 2 was taken in round 3"); return
      }
      #expect(code == ErrorCode.wrongRound.rawValue, "\(text)")
      #expect(text.contains("round 2") && text.contains("expected 3"), "\(text)")
      #expect(loop.count == 0)
      // The honest update of round 3 that follows is the node's one update, and it is taken.
      #expect(try send(f, client, transfer: 2, round: 3).get().chunks > 1)
      #expect(loop.count == 1)
    }
  }

  /// A node whose session ends mid-upload (killed, its link gone) must not hold the one upload slot: the
  /// coordinator forgets its transfer and the node waiting behind it streams at once.
  @Test func forgettingANodeFreesTheUploadSlotForTheNextOne() throws {
    let f = try Federation()
    defer { f.cleanup() }
    f.registry.enrol(f.mallory.card)
    let (zap, server, receiver) = try upload.setup(f)
    defer { zap.stop(); server.close() }
    // The receiver belongs to the loop's thread: the test asks it to forget Mallory there.
    let forgetMallory = Locked(false)
    let aliceBegins = Locked(0)
    let loop = CoordinatorLoop(server: server, receiver: receiver) { m, ep in
      if case .success(.uploadBegin) = m.message, m.userID == f.alice.card.fingerprint { aliceBegins.value += 1 }
      if forgetMallory.value { forgetMallory.value = false; receiver.forget(node: f.mallory.card.fingerprint, endpoint: ep) }
    }
    defer { loop.finish() }
    let stalled = try f.client(f.mallory, of: server)
    defer { stalled.close() }
    let waiting = try f.client(f.alice, of: server)
    defer { waiting.close() }
    // Mallory starts first and stops sending after 3 chunks (as if killed); Alice queues behind it.
    _ = try send(f, stalled, transfer: 1, id: f.mallory, stopAt: 3)
    let started = Date()
    let result = Locked<Result<UploadSender.Result, TransferError>?>(nil)
    let t = Thread { result.value = try? self.send(f, waiting, transfer: 1) }
    t.start()
    // Alice's UPLOAD_BEGIN is answered "busy" while Mallory holds the slot: her second one (a retry after the
    // first was refused) shows she waited, and nothing arrived meanwhile.
    #expect(waitUntil(30, every: 0.02) { aliceBegins.value >= 2 }, "Alice asks again after being told to wait")
    #expect(loop.count == 0, "Alice waits while Mallory holds the slot")
    forgetMallory.value = true
    waitUntil(10, every: 0.05) { result.value != nil }
    #expect(result.value.map { (try? $0.get()) != nil } == true, "Alice's upload finished once Mallory was forgotten: \(String(describing: result.value))")
    #expect(Date().timeIntervalSince(started) < 8)
  }

  /// An ERROR answering another transfer (e.g. a late chunk of the previous round's) does not end this upload.
  @Test func anErrorAboutAnotherTransferDoesNotEndAnUpload() throws {
    let f = try Federation()
    defer { f.cleanup() }
    let (zap, server, receiver) = try upload.setup(f)
    defer { zap.stop(); server.close() }
    let loop = CoordinatorLoop(server: server, receiver: receiver) { m, ep in
      if case .success(.uploadBegin(let t, _, _, _)) = m.message {
        ep.send(.error(code: ErrorCode.unknownTransfer.rawValue, message: "no transfer \(t - 1) in progress", subject: .transfer(t - 1)), to: m.peer)
      }
    }
    defer { loop.finish() }
    let client = try f.client(f.alice, of: server)
    defer { client.close() }
    #expect(try send(f, client, transfer: 227).get().chunks > 1)
    #expect(loop.count == 1)
  }
}
