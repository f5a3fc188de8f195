import AgoraRounds
import Foundation

/// One round's outcome: the row of the round table, what the registry records of it (`record`), and what an
/// observer (the dashboard, its metrics) is told when the round ends.
public struct RoundOutcome: Sendable {
  public var round: Int
  /// The version the round ends at: the one it made, or the one that stays.
  public var version: Int
  public var hash: String
  public var started: Date
  public var ended: Date
  public var selected: Int
  /// Compute donors among the selected nodes.
  public var donors: Int
  public var accepted: Int
  /// Nodes whose update was refused.
  public var rejected: [String]
  /// Late updates of the previous round folded in with staleness weighting (not counted in `accepted`).
  public var late: Int
  public var tokens: UInt64
  public var bytesIn: UInt64
  public var meanLoss: Double
  /// Bits per byte of `version` per language (empty without evaluation text).
  public var bitsPerByte: [(String, Double)]
  /// Whether the round made a version.
  public var applied: Bool
  /// Why the round made no version ("quorum not reached (…)", "no change"); empty when it made one.
  public var note: String

  public var seconds: Double { ended.timeIntervalSince(started) }
}

/// A node with a live session, as an observer sees it.
public struct ConnectedNode: Codable, Sendable, Equatable {
  public var fingerprint: String
  public var name: String
  public var donor: Bool
  /// Unix seconds.
  public var lastSeen: Double
  public init(fingerprint: String, name: String, donor: Bool, lastSeen: Double) {
    self.fingerprint = fingerprint
    self.name = name
    self.donor = donor
    self.lastSeen = lastSeen
  }
}

/// What the coordinator tells whoever watches it.
public enum CoordinatorEvent: Sendable {
  /// The nodes connected now and the current version (about once a second, and when a round starts).
  case nodes([ConnectedNode], version: Int)
  /// A round is announced to `expected` nodes; it closes at `deadline` at the latest.
  case roundStarted(round: Int, expected: Int, deadline: Date)
  /// An update passed every check and was folded into the round's sum (`bytes` of sealed payload); `late`: it
  /// was made for an earlier round (staleness-weighted, not counted for the quorum).
  case updateAccepted(round: Int, bytes: UInt64, late: Bool)
  /// An update was refused.
  case updateRefused(round: Int)
  case roundEnded(RoundOutcome)
}

/// Watches a coordinator (the dashboard does, through `agora coordinator`). Events arrive in order on the
/// coordinator's thread: an observer must return at once (take a lock, copy, return).
public protocol CoordinatorObserver: AnyObject, Sendable {
  func coordinator(_ event: CoordinatorEvent)
}
