import AgoraRounds
import AgoraCrypto
import AgoraTensor
import AgoraTransport
import AgoraWire
import Foundation

/// What a node trained of its next round before that round was announced (`rounds.overlap_steps`): the
/// progress since it sent its last update, θ_now − θ_sent, which the next round adds to its version (Streaming
/// DiLoCo's overlapped inner steps, folded in by replaying the local progress on the new version), and the
/// figures the next update reports for those steps.
struct CarriedSteps {
  let progress: FloatBuffer
  var steps: Int
  var seconds: Double
  var loss: Float
  /// The trainer's tokens per language, and the process's CPU time, when the overlapped steps began.
  var tokensBefore: [String: UInt64]
  var cpu0: Double
}

/// A round's upload and what follows it, on a thread of its own: the update sent (and unmasked, with secure
/// aggregation), then the next message the round loop acts on; for a signed ROUND, its version is fetched
/// meanwhile too. The round loop's thread trains meanwhile and reads no message until this ends.
final class Exchange: @unchecked Sendable {
  enum Outcome {
    /// The upload went through and `message` came next; a prefetch that failed for a reason the round loop
    /// must act on (the session ended, a refusal) is in `prefetchError`.
    case next(Message, prefetchError: Error?)
    /// The upload failed (the error the round loop acts on, as for an upload on its own thread).
    case failed(Error)
    /// The node is stopping.
    case stopped
  }

  private let cond = NSCondition()
  private var result: Outcome? = nil

  init(_ body: @escaping @Sendable () -> Outcome) {
    let t = Thread { [self] in
      let o = body()
      cond.lock(); result = o; cond.broadcast(); cond.unlock()
    }
    t.name = "agora-exchange"
    t.start()
  }

  /// The outcome if the exchange has ended, without waiting.
  var outcome: Outcome? { cond.lock(); defer { cond.unlock() }; return result }

  /// Waits for the outcome.
  func wait() -> Outcome {
    cond.lock(); defer { cond.unlock() }
    while result == nil { cond.wait() }
    return result!
  }
}

extension NodeService {
  /// Sends `pending` on an exchange thread and meanwhile trains the next round's first steps, at most
  /// `rounds.overlap_steps`; returns the message that ended the exchange (nil when stopping) and what was
  /// trained. An upload that failed is thrown, as when it runs on the round loop's thread.
  func overlap(_ pending: PendingUpload) throws -> (Message?, CarriedSteps?) {
    guard let trainer = training else { try pending.send(); return (nil, nil) }
    let fed = config.federation
    let sent = carriedBuffer ?? FloatBuffer(count: copy.base.count)
    carriedBuffer = sent
    sent.copy(from: trainer.trained)
    let exchange = Exchange { [self] in
      do { try pending.send() } catch { return .failed(error) }
      return awaitNextRound(after: pending.round)
    }
    // The next round starts here: its moments as `rounds.inner_state` says, then its first steps.
    fed.forgetMoments(trainer)
    try cluster?.send(.forgetMoments)
    let tokensBefore = trainer.tokensByLanguage, cpu0 = processCPUSeconds()
    var steps = 0, seconds = 0.0
    var loss: Float = 0
    while steps < fed.overlapSteps && exchange.outcome == nil && !stop.isSet {
      let s = Date()
      try cluster?.send(.step)
      loss = try trainer.step().loss
      steps += 1
      seconds += Date().timeIntervalSince(s)
      progress(String(format: "%@ training ahead while round %llu's update goes out: step %d of at most %d, loss %.3f", config.name, pending.round, steps,
                      fed.overlapSteps, loss))
    }
    if steps > 0 && isatty(STDOUT_FILENO) == 1 { print("") }
    switch exchange.wait() {
    case .failed(let error):
      throw error
    case .stopped:
      return (nil, nil)
    case .next(let message, let prefetchError):
      if let e = prefetchError as? TransferError {
        switch e {
        case .sessionEnded, .rejected: throw e
        default: break
        }
      }
      // θ_now − θ_sent: what the next round's version gets on top.
      sent.store(trainer.trained, minus: sent)
      return (message, CarriedSteps(progress: sent, steps: steps, seconds: seconds, loss: loss, tokensBefore: tokensBefore, cpu0: cpu0))
    }
  }

  /// Whether `msg`, read after the update of round `sent` went out, is one the round loop acts on: a ROUND of a
  /// later round, LEAVE, WELCOME, or a session-wide ERROR. A ROUND of round `sent` or earlier is the coordinator
  /// announcing again a round it waited for (SPEC §4.1: every minute, to nodes it heard nothing from, which
  /// includes one training for longer), queued while this node trained: it must not end the exchange, or the
  /// node would stop training ahead and then wait idle for the real next round.
  static func endsExchange(_ msg: Message, sent: UInt64) -> Bool {
    switch msg {
    case .round(let r, _, _, _, _, _, _, _, _, _, _, _): return r > sent
    case .leave, .welcome: return true
    case .error(let code, _, _): return code == ErrorCode.revoked.rawValue || code == ErrorCode.notJoined.rawValue
    default: return false
    }
  }

  /// On the exchange thread, after the upload of round `sent`: the next message the round loop acts on
  /// (`endsExchange`); a ROUND's version, if the coordinator signed it, is fetched meanwhile.
  func awaitNextRound(after sent: UInt64) -> Exchange.Outcome {
    while !stop.isSet {
      guard let m = endpoint.receive(timeout: 0.5), case .success(let msg) = m.message, NodeService.endsExchange(msg, sent: sent) else { continue }
      switch msg {
      case .round(_, let baseHash, _, _, _, _, let modelBytes, let patchFrom, let patchHash, _, let version, let signature):
        guard signedByCoordinator(version: version, hash: baseHash, parent: patchFrom, signature: signature), Int(modelBytes) == copy.base.count * 4 else {
          return .next(msg, prefetchError: nil)  // the round loop says why it does not train on it
        }
        let work = prefetchBuffer ?? FloatBuffer(count: copy.base.count)
        prefetchBuffer = work
        do {
          prefetched = (baseHash, try copy.sync(endpoint: endpoint, target: baseHash, patchFrom: patchFrom, patchHash: patchHash, work: work))
          return .next(msg, prefetchError: nil)
        } catch {
          return .next(msg, prefetchError: error)
        }
      default:
        return .next(msg, prefetchError: nil)
      }
    }
    return .stopped
  }
}
