import AgoraRounds
import AgoraText
import Foundation

/// What a node reports of itself as it happens (`agora node --events FILE`, JSON lines), so that supervisors and
/// tests need not read its log's prose.
public enum NodeEvent: Sendable {
  /// A WELCOME (again: after the coordinator ended a session and came back).
  case joined(again: Bool)
  /// The coordinator refused the node at JOIN (other terms, not enrolled, revoked); the node stops.
  case refused(reason: String)
  /// The coordinator ended the session: the federation is finished (the node leaves), or not (it joins again).
  case sessionEnded(finished: Bool, reason: String)
  /// The node took a round's announcement: it trains version `version` for round `round`.
  case roundStarted(round: UInt64, version: UInt64)
  /// The node's update for `round` went out whole (`bytes` on the wire, `steps` trained on `tokens` tokens, as
  /// its UPLOAD_END says; masked or not).
  case updateSent(round: UInt64, bytes: Int, steps: Int, tokens: Int, masked: Bool)
  /// The node will send nothing for this round.
  case roundAbandoned(round: UInt64, reason: String)
  /// The coordinator refused the node's update for this round.
  case updateRefused(round: UInt64, code: UInt16, reason: String)
  /// The node scored a version on its own validation text (bits per byte by language) and sent the signed scores.
  case evaluated(version: UInt64, scores: [(language: String, bitsPerByte: Double)])
}

public protocol NodeObserver: AnyObject, Sendable {
  func node(_ event: NodeEvent)
}

/// Appends a node's events to a file as JSON lines: {"event": "joined", "again": false}, {"event": "refused",
/// "reason": …}, {"event": "session_ended", "finished": …, "reason": …}, {"event": "round_abandoned", "round": …,
/// "reason": …}, {"event": "update_refused", "round": …, "code": …, "reason": …}, {"event": "evaluated",
/// "version": …, "scores": {"de": 3.1, …}}, {"event": "round_started", "round": …, "version": …},
/// {"event": "update_sent", "round": …, "bytes": …, "steps": …, "tokens": …, "masked": …}.
public final class NodeEventFile: NodeObserver, @unchecked Sendable {
  private let file: EventLines

  public init(path: String) throws { file = try EventLines(path: path) }

  public func node(_ event: NodeEvent) {
    let line: String
    switch event {
    case .joined(let again): line = "{\"event\":\"joined\",\"again\":\(again)}"
    case .refused(let reason): line = "{\"event\":\"refused\",\"reason\":\(jsonString(reason))}"
    case .sessionEnded(let finished, let reason): line = "{\"event\":\"session_ended\",\"finished\":\(finished),\"reason\":\(jsonString(reason))}"
    case .roundStarted(let r, let v): line = "{\"event\":\"round_started\",\"round\":\(r),\"version\":\(v)}"
    case .updateSent(let r, let bytes, let steps, let tokens, let masked):
      line = "{\"event\":\"update_sent\",\"round\":\(r),\"bytes\":\(bytes),\"steps\":\(steps),\"tokens\":\(tokens),\"masked\":\(masked)}"
    case .roundAbandoned(let r, let reason): line = "{\"event\":\"round_abandoned\",\"round\":\(r),\"reason\":\(jsonString(reason))}"
    case .updateRefused(let r, let code, let reason): line = "{\"event\":\"update_refused\",\"round\":\(r),\"code\":\(code),\"reason\":\(jsonString(reason))}"
    case .evaluated(let v, let scores):
      let s = scores.map { "\(jsonString($0.language)):\($0.bitsPerByte.isFinite ? String($0.bitsPerByte) : "null")" }.joined(separator: ",")
      line = "{\"event\":\"evaluated\",\"version\":\(v),\"scores\":{\(s)}}"
    }
    file.append(line)
  }
}
