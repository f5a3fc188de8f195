import AgoraTransport
import Foundation

/// The round the coordinator holds, from its announcement to its outcome: whom it selected and waits for, its
/// intake (`RoundCollector`: checks, score, running sum, tallies), its secure aggregation, the public shards it
/// gave to donors, and when it last said whom it waits for. `CoordinatorService.open(round:)` makes it, the
/// service keeps it as `held` while the round runs, and `close` turns it into the round's outcome and record:
/// nothing of a round outlives it but what the registry keeps.
final class HeldRound {
  let number: Int
  let started: Date
  let deadline: Date
  /// The nodes the round was announced to, and their fingerprints (whose say the round waits for).
  let selected: [SessionTable.Session]
  let wanted: Set<String>
  let collector: RoundCollector
  /// The round's secure aggregation (SPEC §7.2), when the federation runs it: the collector's, which folds the
  /// masked updates in.
  var secure: SecureRoundState? { collector.secure }
  /// The shard each donor was given (a repeated ROUND names the same one).
  var donorShards: [String: [UInt8]] = [:]
  /// When the round last said whom it waits for (every `coordinator.wait_report_seconds`).
  var lastSaid: Date

  init(number: Int, started: Date, deadline: Date, selected: [SessionTable.Session], collector: RoundCollector) {
    self.number = number
    self.started = started
    self.deadline = deadline
    self.selected = selected
    self.wanted = Set(selected.map(\.fingerprint))
    self.collector = collector
    self.lastSaid = started
  }

  /// The selected nodes whose say (an update taken or refused) is not in yet.
  var missing: Set<String> { wanted.subtracting(collector.done) }

  /// Every selected node's say is in.
  var complete: Bool { wanted.isSubset(of: collector.done) }

  /// Stops waiting for `node` (it is gone, left, restarted or abandons the round); true when the round was
  /// waiting for it.
  @discardableResult
  func release(_ node: String) -> Bool { wanted.contains(node) && collector.done.insert(node).inserted }

  /// How many accepted updates make the quorum: `quorum` of the selected nodes, at least one.
  func needed(quorum: Double) -> Int { max(1, Int((quorum * Double(selected.count)).rounded(.up))) }
}
