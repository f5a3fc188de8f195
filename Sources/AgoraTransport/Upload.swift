import AgoraCrypto
import AgoraWire
import Foundation

/// Errors of a streamed transfer.
public enum TransferError: Error, Equatable, CustomStringConvertible {
  case timeout(String)
  case rejected(code: UInt16, message: String)
  case protocolViolation(String)
  /// The peer ended the session (LEAVE) while the transfer went on.
  case sessionEnded(LeaveKind, String)

  public var description: String {
    switch self {
    case .sessionEnded(let k, let r): return "the peer ended the session (\(k == .finished ? "federation finished" : "session")): \(r)"
    case .timeout(let s): return "transfer timed out: \(s)"
    case .rejected(let c, let m): return "transfer rejected by the peer (code \(c)): \(m)"
    case .protocolViolation(let s): return "protocol violation: \(s)"
    }
  }
}

/// Sends one sealed update over a node's endpoint with credit-based flow control:
/// the coordinator grants `credit` chunks beyond the next one it needs, acknowledges each chunk, and
/// on a resumed transfer (after a reconnect) says which chunk it needs next. At most `credit + 1` sealed
/// chunks are held, whatever the payload size.
public struct UploadSender {
  public var endpoint: Endpoint
  public var transfer: UInt64
  public var round: UInt64
  /// How long to wait for an acknowledgement before asking again (the request doubles as a resume).
  public var ackTimeout: Double = 5
  /// How many unanswered asks end the transfer.
  public var maxRetries = 6
  /// The round's deadline: waiting (e.g. for credit while other nodes upload) ends there.
  public var deadline: Date? = nil
  /// Asked between messages: true ends the transfer at once (the node is stopping).
  public var shouldStop: () -> Bool = { false }
  /// For robustness tests: send every chunk, then return without UPLOAD_END (the receiver is left waiting).
  public var withholdEnd = false

  public init(endpoint: Endpoint, transfer: UInt64, round: UInt64) {
    self.endpoint = endpoint
    self.transfer = transfer
    self.round = round
  }

  public struct Result: Sendable {
    public var chunks: Int
    public var bytesSent: Int
    public var resends: Int
  }

  /// Streams the payload: `chunk(i)` returns plaintext chunk i (exactly the sealer's chunk size except the last).
  public func send(sealer: EnvelopeSealer, tokens: UInt64, steps: UInt32, loss: Float, cpuMillis: UInt64 = 0, languages: [LanguageTokens] = [],
                   chunk: (Int) throws -> [UInt8]) throws -> Result {
    try send(sealer: sealer, tokens: tokens, steps: steps, loss: loss, cpuMillis: cpuMillis, languages: languages) { i, body in
      try chunk(i).withUnsafeBytes(body)
    }
  }

  /// Streams `payload` (the sealer's whole payload, in memory), chunk by chunk, without copying it.
  public func send(sealer: EnvelopeSealer, tokens: UInt64, steps: UInt32, loss: Float, cpuMillis: UInt64 = 0, languages: [LanguageTokens] = [],
                   payload: UnsafeRawBufferPointer) throws -> Result {
    guard UInt64(payload.count) == sealer.head.payloadLength else {
      throw TransferError.protocolViolation("payload of \(payload.count) bytes for an envelope of \(sealer.head.payloadLength)")
    }
    let size = sealer.head.chunkSize
    return try send(sealer: sealer, tokens: tokens, steps: steps, loss: loss, cpuMillis: cpuMillis, languages: languages) { i, body in
      try body(UnsafeRawBufferPointer(rebasing: payload[(i * size)..<min(payload.count, (i + 1) * size)]))
    }
  }

  func send(sealer: EnvelopeSealer, tokens: UInt64, steps: UInt32, loss: Float, cpuMillis: UInt64, languages: [LanguageTokens],
            withChunk: (Int, (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> Result {
    let total = sealer.head.chunkCount
    // Sealed chunks the receiver has not acknowledged, in the endpoint's send buffers: libzmq reads them
    // in place, and a buffer is sealed into again only after both let go of it.
    var window: [Int: Payload] = [:]
    var sealedUpTo = 0                  // chunks sealed so far (sealing is sequential)
    var next = 0                        // first chunk the receiver still needs
    var sentUpTo = 0                    // chunks sent
    var credit = 0
    var bytes = 0, resends = 0, retries = 0
    var final: [UInt8]? = nil
    var endSent = false
    var resuming = false
    // The time since the last acknowledgement (or request): other messages (heartbeat answers, a round's
    // announcement) arrive meanwhile and must not hide that acknowledgements stopped, e.g. when the connection
    // was dropped and replaced while the link was down, losing what it carried.
    var lastProgress = Date()
    let begin = Message.uploadBegin(transfer: transfer, round: round, chunks: UInt32(total), head: sealer.headBytes)
    endpoint.send(begin)
    bytes += sealer.headBytes.count
    while true {
      // Send what the credit allows.
      while sentUpTo < total && sentUpTo < next + credit {
        if sentUpTo == sealedUpTo {
          try withChunk(sealedUpTo) { plain in
            let buf = endpoint.buffers.take(plain.count + SecretStream.overhead)
            try sealer.seal(plain, into: buf.mutableBytes)
            window[sealedUpTo] = Payload(buf)
          }
          sealedUpTo += 1
        }
        guard let c = window[sentUpTo] else { throw TransferError.protocolViolation("chunk \(sentUpTo) is no longer held") }
        endpoint.send(.uploadChunk(transfer: transfer, index: UInt32(sentUpTo), payload: c))
        bytes += c.count
        sentUpTo += 1
      }
      if next == total && withholdEnd { return Result(chunks: total, bytesSent: bytes, resends: resends) }
      if next == total && !endSent && credit > 0 {
        if final == nil { final = try sealer.finish() }
        endpoint.send(.uploadEnd(transfer: transfer, final: final!, tokens: tokens, steps: steps, lossBits: loss.bitPattern, cpuMillis: cpuMillis, languages: languages))
        bytes += final!.count
        endSent = true
      }
      if let d = deadline, Date() > d { throw TransferError.timeout("the round's deadline passed") }
      if shouldStop() { throw TransferError.timeout("stopping; transfer \(transfer) abandoned") }
      if Date().timeIntervalSince(lastProgress) >= ackTimeout {
        lastProgress = Date()
        retries += 1
        guard retries <= maxRetries else { throw TransferError.timeout("no acknowledgement after \(maxRetries) requests") }
        endpoint.send(begin)  // asks where the receiver stands; the answer resumes the transfer
        resuming = true
        continue
      }
      guard let inbound = endpoint.receive(timeout: min(0.5, max(0.01, ackTimeout - Date().timeIntervalSince(lastProgress))), where: { !$0.isRoundAnnouncement }),
            case .success(let m) = inbound.message else { continue }
      switch m {
      case .ack(let t, let n32, let c) where t == transfer:
        retries = 0
        lastProgress = Date()
        let n = Int(n32)
        if n == total + 1 { return Result(chunks: total, bytesSent: bytes, resends: resends) }
        guard n <= total else { throw TransferError.protocolViolation("acknowledged chunk \(n) of \(total)") }
        if resuming {
          // The answer to a resume request: continue from the receiver's position.
          resuming = false
          guard n >= next else { throw TransferError.protocolViolation("receiver lost chunks it had acknowledged (\(n) < \(next)); start a new transfer") }
          resends += max(0, sentUpTo - n)
          sentUpTo = n
          endSent = false
        }
        next = max(next, n)
        for k in window.keys where k < next { window[k] = nil }
        credit = Int(c)
      case .error(let code, let text, let subject):
        // Only an ERROR about this transfer or its round ends it (an answer to an earlier transfer's late
        // chunk does not), and the session-wide ones: revoked, or the coordinator no longer knows the session.
        let mine = subject == .transfer(transfer) || subject == .round(round)
          || (subject == .none && (code == ErrorCode.revoked.rawValue || code == ErrorCode.notJoined.rawValue))
        if mine { throw TransferError.rejected(code: code, message: text) }
      case .leave(let kind, let reason):
        throw TransferError.sessionEnded(kind, reason)
      default:
        continue
      }
    }
  }
}
