import AgoraCrypto
import AgoraWire
import Foundation

/// Receives streamed updates on the coordinator: one `Incoming` per (node, transfer), each holding only
/// its envelope opener and position, so memory does not depend on the update's size.
public final class UploadReceiver {
  public struct Context {
    public var federation: String
    public var round: UInt64
    public var baseHash: [UInt8]
    public var aggregationPublic: [UInt8]
    public var aggregationSecret: [UInt8]
    public var credit: UInt16
    /// A closed round whose late updates are still taken (staleness weighting): its number and base.
    public var previous: (round: UInt64, baseHash: [UInt8])? = nil
    public init(federation: String, round: UInt64, baseHash: [UInt8], aggregationPublic: [UInt8], aggregationSecret: [UInt8], credit: UInt16 = 4) {
      self.federation = federation
      self.round = round
      self.baseHash = baseHash
      self.aggregationPublic = aggregationPublic
      self.aggregationSecret = aggregationSecret
      self.credit = credit
    }
  }

  /// A finished, verified update.
  public struct Completed {
    public var node: String
    public var transfer: UInt64
    /// The round the update was made for (the previous one for a late update).
    public var round: UInt64
    public var bytes: UInt64
    public var tokens: UInt64
    public var steps: UInt32
    public var loss: Float
    public var cpuSeconds: Double = 0
    public var languages: [LanguageTokens] = []
  }

  final class Incoming {
    /// The envelope's opener while the upload streams. An upload waiting for its turn holds none (a hasher's
    /// buffers and the cipher's state, ≈ 70 KB): with hundreds of nodes in a round, nearly all of them wait. It is
    /// made again, from the head already checked, when the upload starts streaming.
    private var held: EnvelopeOpener?
    private let make: () throws -> EnvelopeOpener
    func opener() throws -> EnvelopeOpener {
      if let held { return held }
      let o = try make()
      held = o
      return o
    }
    /// Lets go of the opener while waiting (nothing of the payload has been opened yet).
    func park() { if next == 0 { held = nil } }
    var next = 0
    let total: Int
    var peer: [UInt8]
    var active = false
    /// When the transfer last moved (started streaming, or a chunk was accepted).
    var progressed = Date()
    let node: String
    let transfer: UInt64
    var round: UInt64 = 0
    init(opener: EnvelopeOpener, make: @escaping () throws -> EnvelopeOpener, total: Int, peer: [UInt8], node: String, transfer: UInt64) {
      self.held = opener
      self.make = make
      self.total = total
      self.peer = peer
      self.node = node
      self.transfer = transfer
    }
  }

  /// Uploads that stream at once (each in its own staging slot at the consumer); the others wait with zero credit.
  public var maxActive = 1
  /// The most uploads that streamed at once since this was last set to 0.
  public var peakActive = 0
  var waiting: [String] = []
  /// Who takes the uploads' plaintext and verdicts (the round collector); none: decrypted, verified, dropped.
  public weak var consumer: (any UploadConsumer)?

  public var context: Context
  let registry: EnrolmentRegistry
  var incoming: [String: Incoming] = [:]
  var finished: [String: (chunks: Int, round: UInt64)] = [:]  // transfer key → chunk count, round
  /// Per round, the nodes whose update for it was accepted or refused: one update per (node, round).
  var spoken: [UInt64: Set<String>] = [:]
  /// Where chunks are decrypted otherwise: one chunk, reused (grown to the largest chunk size seen).
  var scratch = UnsafeMutableRawBufferPointer(start: nil, count: 0)

  deinit { scratch.deallocate() }
  public var log: (String) -> Void = { _ in }

  public init(context: Context, registry: EnrolmentRegistry) {
    self.context = context
    self.registry = registry
  }

  /// Handles one inbound message from a node's session; replies through `endpoint`. Returns whether the
  /// message belonged to an upload.
  @discardableResult
  public func handle(_ inbound: Inbound, endpoint: Endpoint) -> Bool {
    guard case .success(let m) = inbound.message else { return false }
    let node = inbound.userID
    func reject(_ t: UInt64, _ code: ErrorCode, _ text: String, round: UInt64? = nil) {
      log("upload \(t) from \(node.prefix(12)) rejected: \(Printable.line(text))")
      let forRound = round ?? incoming["\(node)/\(t)"]?.round ?? context.round
      if let inc = incoming.removeValue(forKey: "\(node)/\(t)"), inc.active { consumer?.uploadAborted(node: node, transfer: t); promote(endpoint) }
      waiting.removeAll { $0 == "\(node)/\(t)" }
      // A refused update is the node's one update of the round: it may not try again (SPEC §4.1). An upload
      // answered for its round (6) or as a duplicate (12) is no update: the round still waits for the node's own.
      if code == .rejectedUpdate {
        spoken[forRound, default: []].insert(node)
        consumer?.uploadRefused(node: node, round: forRound, reason: text)
      }
      endpoint.send(.error(code: code.rawValue, message: text, subject: .transfer(t)), to: inbound.peer)
    }
    switch m {
    case .uploadBegin(let t, let round, let chunks, let head):
      let key = "\(node)/\(t)"
      if let n = finished[key]?.chunks { endpoint.send(.ack(transfer: t, next: UInt32(n + 1), credit: 0), to: inbound.peer); return true }
      if let inc = incoming[key] {  // resume: say where we stand
        inc.peer = inbound.peer
        endpoint.send(.ack(transfer: t, next: UInt32(inc.next), credit: inc.active ? context.credit : 0), to: inbound.peer)
        return true
      }
      let late = context.previous.map { round == $0.round } ?? false
      guard round == context.round || late else {
        reject(t, .wrongRound, "round \(round) is not the current round \(context.round)\(round < context.round ? " (a late update, dropped)" : "")", round: round)
        return true
      }
      // One update per node and round: a second transfer for a round the node has delivered (or had refused)
      // or is delivering is refused, whatever its transfer id.
      if spoken[round]?.contains(node) == true {
        reject(t, .duplicate, "this node already delivered, or had refused, an update for round \(round)", round: round)
        return true
      }
      if incoming.values.contains(where: { $0.node == node && $0.round == round }) {
        reject(t, .duplicate, "this node is already sending an update for round \(round) under another transfer", round: round)
        return true
      }
      let base = late ? context.previous!.baseHash : context.baseHash
      guard let nodeID = unhex(node), nodeID.count == 32 else { reject(t, .notEnrolled, "session has no enrolled identity", round: round); return true }
      do {
        let expected = Envelope.Context(federation: context.federation, round: round, baseHash: base, nodeID: nodeID)
        let (aggregationPublic, aggregationSecret) = (context.aggregationPublic, context.aggregationSecret)
        let make = { [registry] in
          try EnvelopeOpener(headBytes: head, expected: expected, aggregationPublicKey: aggregationPublic, aggregationSecretKey: aggregationSecret,
                             sessionNodeID: nodeID, signerKey: { id in registry.card(fingerprint: hex(id))?.signPublic })
        }
        let opener = try make()
        guard opener.head.chunkCount == Int(chunks) else { reject(t, .rejectedUpdate, "head says \(opener.head.chunkCount) chunks, message says \(chunks)", round: round); return true }
        let inc = Incoming(opener: opener, make: make, total: Int(chunks), peer: inbound.peer, node: node, transfer: t)
        inc.round = round
        incoming[key] = inc
        waiting.append(key)
        if incoming.values.filter(\.active).count >= maxActive {
          endpoint.send(.ack(transfer: t, next: 0, credit: 0), to: inbound.peer)  // wait for your turn
        }
        promote(endpoint)
        if !inc.active { inc.park() }
      } catch EnvelopeError.wrongRound(let expected, let got) {
        // A head for another round (a stale retry) is answered as a wrong round, not as a refused update (SPEC §5).
        reject(t, .wrongRound, "\(EnvelopeError.wrongRound(expected: expected, got: got))", round: round)
      } catch {
        reject(t, .rejectedUpdate, "\(error)", round: round)
      }
      return true
    case .uploadChunk(let t, let index, let payload):
      guard let inc = incoming["\(node)/\(t)"] else {
        endpoint.send(.error(code: ErrorCode.unknownTransfer.rawValue, message: "no transfer \(t) in progress", subject: .transfer(t)), to: inbound.peer)
        return true
      }
      inc.peer = inbound.peer
      guard inc.active, Int(index) == inc.next else {
        // A duplicate or a gap (after a reconnect): tell the sender where to continue.
        endpoint.send(.ack(transfer: t, next: UInt32(inc.next), credit: inc.active ? context.credit : 0), to: inbound.peer)
        return true
      }
      do {
        let opener = try inc.opener()
        let n = opener.nextChunkBytes
        let plain: UnsafeMutableRawBufferPointer
        if let d = consumer?.destination(node: node, chunk: inc.next, bytes: n), d.count == n {
          plain = d
        } else {
          if scratch.count < n {
            scratch.deallocate()
            scratch = .allocate(byteCount: n, alignment: 64)
          }
          plain = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n])
        }
        try payload.withUnsafeBytes { try opener.open($0, into: plain) }
        try consumer?.chunk(node: node, index: inc.next, plaintext: UnsafeRawBufferPointer(plain))
        inc.next += 1
        inc.progressed = Date()
        endpoint.send(.ack(transfer: t, next: UInt32(inc.next), credit: context.credit), to: inbound.peer)
      } catch {
        reject(t, .rejectedUpdate, "\(error)")
      }
      return true
    case .uploadEnd(let t, let final, let tokens, let steps, let loss, let cpu, let languages):
      let key = "\(node)/\(t)"
      guard let inc = incoming[key] else {
        if let n = finished[key]?.chunks { endpoint.send(.ack(transfer: t, next: UInt32(n + 1), credit: 0), to: inbound.peer) }
        return true
      }
      guard inc.active else { return true }
      do {
        let opener = try inc.opener()
        try opener.finish(final)
        try consumer?.completed(Completed(node: node, transfer: t, round: inc.round, bytes: opener.head.payloadLength, tokens: tokens, steps: steps,
                                 loss: Float(bitPattern: loss), cpuSeconds: Double(cpu) / 1000, languages: languages))
        incoming[key] = nil
        finished[key] = (inc.total, inc.round)
        spoken[inc.round, default: []].insert(node)
        endpoint.send(.ack(transfer: t, next: UInt32(inc.total + 1), credit: 0), to: inbound.peer)
        promote(endpoint)
      } catch {
        reject(t, .rejectedUpdate, "\(error)")
      }
      return true
    default:
      return false
    }
  }

  /// Starts waiting uploads while fewer than `maxActive` stream, granting them credit.
  func promote(_ endpoint: Endpoint) {
    while incoming.values.filter(\.active).count < maxActive, !waiting.isEmpty {
      let key = waiting.removeFirst()
      guard let inc = incoming[key] else { continue }
      inc.active = true
      inc.progressed = Date()
      consumer?.uploadStarted(node: inc.node, transfer: inc.transfer)
      peakActive = max(peakActive, incoming.values.filter(\.active).count)
      endpoint.send(.ack(transfer: inc.transfer, next: UInt32(inc.next), credit: context.credit), to: inc.peer)
    }
  }

  /// Abandons every transfer of `node` (its session expired or it left): a stalled upload frees its slot for
  /// the uploads waiting behind it. Returns how many were abandoned.
  @discardableResult
  /// Whether `node` has an upload in progress (streaming or waiting for its turn).
  public func isReceiving(node: String) -> Bool { incoming.values.contains { $0.node == node } }

  public func forget(node: String, endpoint: Endpoint) -> Int {
    let gone = incoming.filter { $0.value.node == node }
    for (key, inc) in gone {
      incoming[key] = nil
      if inc.active { consumer?.uploadAborted(node: node, transfer: inc.transfer) }
    }
    waiting.removeAll { incoming[$0] == nil }
    if !gone.isEmpty {
      log("transfer\(gone.count == 1 ? "" : "s") \(gone.values.map { String($0.transfer) }.sorted().joined(separator: ", ")) of \(node.prefix(12)) abandoned: its session ended")
      promote(endpoint)
    }
    return gone.count
  }

  /// Refuses streaming uploads that have not moved for `seconds` (no chunk accepted, or no UPLOAD_END after the
  /// last one): a node that stops part-way, or withholds its last message, would otherwise hold the upload slot
  /// until the deadline. The refusal is final for its round, like any other (ERROR 7). Returns how many.
  @discardableResult
  public func refuseStalled(after seconds: Double, endpoint: Endpoint, now: Date = Date()) -> Int {
    let stalled = incoming.filter { $0.value.active && now.timeIntervalSince($0.value.progressed) > seconds }
    for (key, inc) in stalled {
      incoming[key] = nil
      consumer?.uploadAborted(node: inc.node, transfer: inc.transfer)
      spoken[inc.round, default: []].insert(inc.node)
      let text = String(format: "upload stalled: nothing for %.0f s (at chunk %d of %d)", seconds, inc.next, inc.total)
      log("upload \(inc.transfer) from \(inc.node.prefix(12)) refused: \(text)")
      consumer?.uploadRefused(node: inc.node, round: inc.round, reason: text)
      endpoint.send(.error(code: ErrorCode.rejectedUpdate.rawValue, message: text, subject: .transfer(inc.transfer)), to: inc.peer)
    }
    if !stalled.isEmpty { promote(endpoint) }
    return stalled.count
  }

  /// Forgets every transfer (a new round starts); in-progress ones are aborted, except those of `keepRound`
  /// (a closed round whose late updates are still taken), which go on where they are.
  public func reset(endpoint: Endpoint, keepRound: UInt64? = nil) {
    let dropped = incoming.filter { $0.value.round != keepRound }
    for inc in dropped.values where inc.active { consumer?.uploadAborted(node: inc.node, transfer: inc.transfer) }
    for inc in dropped.values {
      endpoint.send(.error(code: ErrorCode.wrongRound.rawValue, message: "round \(inc.round) ended", subject: .transfer(inc.transfer)), to: inc.peer)
    }
    incoming = incoming.filter { $0.value.round == keepRound }
    waiting = waiting.filter { incoming[$0] != nil }
    finished = finished.filter { $0.value.round == keepRound }
    spoken = spoken.filter { $0.key == keepRound }
  }
}
