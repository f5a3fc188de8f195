import AgoraRounds
import AgoraCrypto
import AgoraSecureAggregation
import AgoraTensor
import AgoraTransport
import AgoraWire
import Foundation

/// A node's inbox for the secure-aggregation messages the coordinator sends while the node is busy in other
/// receive loops (fetching, uploading): the endpoint diverts them here. While a `wait` is in progress it also
/// takes what ends the node's session — LEAVE, or an ERROR saying the coordinator no longer knows the session
/// (it restarted) or revoked the node — so that the wait ends at once, not at the round's deadline.
public final class SecureInbox: @unchecked Sendable {
  private let cond = NSCondition()
  private var messages: [Message] = []
  private var waiting = 0
  private var interruption: TransferError?
  /// The latest round the coordinator announced: it announces round r + 1 only once round r is over.
  private var announced: UInt64 = 0

  /// Takes SA_ROSTER, SA_SHARES and SA_UNMASK, and while a `wait` is in progress LEAVE and ERROR 11 / 4 about
  /// no subject; everything else goes on to the endpoint's queue.
  func take(_ m: Inbound) -> Bool {
    guard case .success(let msg) = m.message else { return false }
    cond.lock(); defer { cond.unlock() }
    switch msg {
    case .secaggRoster, .secaggShares, .secaggUnmask:
      messages.append(msg); cond.broadcast()
      return true
    case .round(let r, _, _, _, _, _, _, _, _, _, _, _):
      // Passed on (the main loop trains it), but a wait for an earlier round's message learns that round is over.
      announced = max(announced, r); cond.broadcast()
      return false
    case .leave(let kind, let reason) where waiting > 0:
      interruption = .sessionEnded(kind, reason); cond.broadcast()
      return true
    case .error(let code, let text, let subject) where waiting > 0 && subject == .none
      && (code == ErrorCode.notJoined.rawValue || code == ErrorCode.revoked.rawValue):
      interruption = .rejected(code: code, message: text); cond.broadcast()
      return true
    default:
      return false
    }
  }

  /// The first message for which `pick` gives a value, waiting until `deadline` (nil then); older rounds'
  /// messages are dropped on the way. Throws what ended the session if it ends meanwhile.
  /// With `round`, the wait also ends (nil) once a later round is announced: what it waits for will not come.
  func wait<T>(until deadline: Date, round: UInt64? = nil, stop: ManagedAtomicFlag? = nil, _ pick: (Message) -> T?) throws -> T? {
    cond.lock()
    waiting += 1
    defer { waiting -= 1; cond.unlock() }
    while true {
      if let i = messages.firstIndex(where: { pick($0) != nil }) { return pick(messages.remove(at: i)) }
      if let e = interruption { interruption = nil; throw e }
      if let round, announced > round { return nil }
      if stop?.isSet == true || Date() >= deadline { return nil }
      _ = cond.wait(until: min(deadline, Date(timeIntervalSinceNow: 0.5)))
    }
  }

  /// Opens round `round` on this node: drops what is left of it and of earlier rounds. Nothing for `round` can
  /// be meant for this setup yet (its roster answers the keys the node is about to send), so what is here is a
  /// previous session's: a coordinator killed in round r's key exchange restarts at round r, and its forwarded
  /// shares, still queued, were sealed to keys this node no longer holds (issue 31: taken as the new round's
  /// shares, "wrong key or tampered box", and the round lost).
  func open(round: UInt64) {
    cond.lock()
    interruption = nil
    announced = min(announced, round)  // a coordinator restored to an earlier version announces its rounds again
    messages.removeAll {
      switch $0 {
      case .secaggRoster(let r, _, _, _), .secaggShares(let r, _), .secaggUnmask(let r, _, _): return r <= round
      default: return true
      }
    }
    cond.unlock()
  }
}
