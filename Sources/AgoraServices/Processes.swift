import AgoraCluster
import AgoraCoordinator
import AgoraDashboard
import AgoraNode
import AgoraRounds
import Foundation
import ServiceLifecycle

/// What a coordinator process runs, built from its config in one place: the rounds (after the vocabulary phase
/// when the federation learns its vocabulary), watched by the event file when one is asked for, and the
/// dashboard when the config serves one (it watches the rounds and serves their registry). `run` holds them as
/// one `ServiceGroup`; the end of the rounds ends the dashboard.
public struct CoordinatorProcess {
  public let rounds: CoordinatorRun
  public let dashboard: DashboardRun?
  /// The group's services, the rounds first (their end ends the group).
  public var services: [any Service] { [rounds] + (dashboard.map { [$0] } ?? []) }

  /// `events`: append the coordinator's events to this file as JSON lines. `configure` sees the service before
  /// its first round (e.g. to print the round table). A file that cannot be opened is a `ConfigError` naming it,
  /// before anything runs.
  public init(config: CoordinatorConfig, events: String? = nil, log: @escaping @Sendable (String) -> Void,
              configure: @escaping @Sendable (CoordinatorService) -> Void = { _ in }) throws {
    var observers: [any CoordinatorObserver] = []
    if let events { observers.append(try CoordinatorEventFile(path: events)) }
    let live = config.dashboard == nil ? nil : DashboardObserver(live: LiveState(federation: config.federation.id))
    if let live { observers.append(live) }
    let rounds = CoordinatorRun(config: config, observers: observers, log: log, configure: configure)
    self.rounds = rounds
    dashboard = live.map { DashboardRun(config: config, coordinator: rounds, observer: $0, log: log) }
  }

  /// Runs the group until the rounds are over, or SIGTERM/SIGINT shuts it down gracefully.
  public func run() async throws { try await runGroup(services, label: "agora.coordinator") }
}

/// What a node process runs, built from its config: its side of the vocabulary phase when there is one, then the
/// node (spanning the MPI ranks of `cluster` when it has one), watched by the event file when one is asked for.
public struct NodeProcess {
  public let node: NodeRun

  /// `log` says how the node is made (its MPI ranks) and the vocabulary phase's progress. An event file that
  /// cannot be opened is a `ConfigError` naming it, before anything runs.
  /// `observer`: told the node's events too (after the event file), e.g. a donor's progress line.
  public init(config: NodeConfig, events: String? = nil, cluster: Cluster? = nil, observer: NodeObserver? = nil,
              log: @escaping @Sendable (String) -> Void) throws {
    let eventFile = try events.map { try NodeEventFile(path: $0) }
    let observers: [NodeObserver] = [eventFile, observer].compactMap { $0 }
    node = NodeRun(config: config, vocabularyLog: log) {
      let node = try NodeService(config: config, cluster: cluster)
      node.observer = observers.count > 1 ? NodeObservers(observers) : observers.first
      if let cluster {
        log("\(config.name): a node of \(cluster.size) MPI ranks (batch \(config.federation.batch) = \(cluster.size) × \(config.federation.batch / cluster.size))")
      }
      return node
    }
  }

  /// Runs the node until the federation's rounds are over or it leaves, or SIGTERM/SIGINT stops it gracefully.
  public func run() async throws { try await runGroup([node], label: "agora.node") }
}
