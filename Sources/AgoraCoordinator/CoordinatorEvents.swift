import AgoraRounds
import AgoraWire
import Glibc
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
  /// The coordinator is bound at `endpoint` (nodes can join) and starts from `version` (nil: it is bound for
  /// the vocabulary phase, before version 0 exists).
  case listening(endpoint: String, version: Int?)
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

/// Several observers of one coordinator (the dashboard and an event file), told in order. It holds them.
public final class CoordinatorObservers: CoordinatorObserver, @unchecked Sendable {
  private let all: [any CoordinatorObserver]
  public init(_ all: [any CoordinatorObserver]) { self.all = all }
  public func coordinator(_ event: CoordinatorEvent) { for o in all { o.coordinator(event) } }
}

/// The coordinator's events as JSON lines appended to a file (`agora coordinator --events FILE`): what a
/// supervisor, a script or a test waits on instead of reading the log's prose. One line per event, written
/// whole with one `write` (O_APPEND): `listening`, `nodes` (when the set of connected nodes changes),
/// `round_started`, `update_accepted`, `update_refused`, `round_ended`.
public final class CoordinatorEventFile: CoordinatorObserver, @unchecked Sendable {
  private let file: EventLines
  private let lock = NSLock()
  private var lastNodes: [String] = []

  /// Opens (creates) `path` for appending; a file that cannot be opened is an error before anything runs.
  public init(path: String) throws { file = try EventLines(path: path) }

  public func coordinator(_ event: CoordinatorEvent) {
    let line: String
    switch event {
    case .listening(let endpoint, let version):
      line = "{\"event\":\"listening\",\"endpoint\":\(jsonString(endpoint)),\"phase\":\"\(version == nil ? "vocabulary" : "rounds")\""
        + (version.map { ",\"version\":\($0)" } ?? "") + "}"
    case .nodes(let nodes, let version):
      let names = nodes.map(\.name).sorted()
      lock.lock(); defer { lock.unlock() }
      guard names != lastNodes else { return }
      lastNodes = names
      file.append("{\"event\":\"nodes\",\"nodes\":[\(names.map(jsonString).joined(separator: ","))],\"version\":\(version)}")
      return
    case .roundStarted(let round, let expected, let deadline):
      line = "{\"event\":\"round_started\",\"round\":\(round),\"expected\":\(expected),\"deadline\":\(deadline.timeIntervalSince1970)}"
    case .updateAccepted(let round, let bytes, let late):
      line = "{\"event\":\"update_accepted\",\"round\":\(round),\"bytes\":\(bytes),\"late\":\(late)}"
    case .updateRefused(let round):
      line = "{\"event\":\"update_refused\",\"round\":\(round)}"
    case .roundEnded(let o):
      line = "{\"event\":\"round_ended\",\"round\":\(o.round),\"version\":\(o.version),\"applied\":\(o.applied),\"accepted\":\(o.accepted),"
        + "\"selected\":\(o.selected),\"rejected\":[\(o.rejected.map(jsonString).joined(separator: ","))],\"note\":\(jsonString(o.note))}"
    }
    file.append(line)
  }
}
