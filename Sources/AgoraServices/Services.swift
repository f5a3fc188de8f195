import AgoraCoordinator
import AgoraDashboard
import AgoraNode
import AgoraRounds
import AgoraTransport
import Foundation
import Logging
import ServiceLifecycle

// A coordinator process is one `ServiceGroup` of two services, a node process one of one: the group owns
// SIGTERM and SIGINT and turns them into a graceful shutdown (what that means to connected nodes is SPEC's:
// the coordinator says so and leaves), and a service that ends, ends the group. The federation's own loops
// block their thread (ZeroMQ polls, BLAS): each runs on a thread of its own, awaited, and stopped through the
// flag it already polls.

/// Runs `body` on a new thread and awaits its result.
func onThread<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
  try await withCheckedThrowingContinuation { c in
    let t = Thread { c.resume(with: Result { try body() }) }
    t.name = name
    t.start()
  }
}

/// A value one service makes and another waits for (the coordinator's registry, once version 0 exists).
final class Handoff<T: Sendable>: @unchecked Sendable {
  private let lock = NSLock()
  private var value: T?
  private var closed = false
  private var waiters: [CheckedContinuation<T?, Never>] = []

  func set(_ v: T?) {
    lock.lock()
    guard !closed else { lock.unlock(); return }
    value = v
    closed = true
    let w = waiters
    waiters = []
    lock.unlock()
    for c in w { c.resume(returning: v) }
  }

  /// The value, or nil if none will come.
  func get() async -> T? {
    await withCheckedContinuation { c in
      lock.lock()
      if closed { lock.unlock(); c.resume(returning: value); return }
      waiters.append(c)
      lock.unlock()
    }
  }
}

/// The coordinator's work: the vocabulary phase when the federation learns its vocabulary, then the rounds.
/// A graceful shutdown stops whichever is running.
public final class CoordinatorRun: Service, @unchecked Sendable {
  let config: CoordinatorConfig
  let observers: [any CoordinatorObserver]
  let log: @Sendable (String) -> Void
  let configure: @Sendable (CoordinatorService) -> Void
  let ready = Handoff<CoordinatorService>()
  private let stop = ManagedAtomicFlag()
  private let lock = NSLock()
  private var service: CoordinatorService?
  /// The rounds' outcomes, once they are over.
  public private(set) var outcomes: [RoundOutcome] = []
  public private(set) var first: CoordinatorService?

  /// `configure` sees the service before its first round (e.g. to print its round table).
  public init(config: CoordinatorConfig, observers: [any CoordinatorObserver], log: @escaping @Sendable (String) -> Void,
              configure: @escaping @Sendable (CoordinatorService) -> Void = { _ in }) {
    self.config = config
    self.observers = observers
    self.log = log
    self.configure = configure
  }

  public func run() async throws {
    defer { ready.set(nil) }
    let watching = CoordinatorObservers(observers)
    try await withGracefulShutdownHandler {
      if VocabularyPhase.needed(config.federation) {
        // The federation's vocabulary is learned first, from the nodes' count tables (SPEC §4.4).
        let phase = VocabularyPhase(config: config)
        phase.log = log
        phase.observer = watching
        let stop = self.stop
        nonisolated(unsafe) let p = phase
        _ = try await onThread("agora-vocabulary") { try p.run(stop: stop) }
      }
      if stop.isSet { return }
      let s = try CoordinatorService(config: config)
      s.log = log
      s.observer = watching
      configure(s)
      lock.withLock { service = s; first = s }
      if stop.isSet { s.requestStop() }
      ready.set(s)
      nonisolated(unsafe) let svc = s
      defer { svc.shutdown() }
      outcomes = try await onThread("agora-coordinator") { try svc.run() }
    } onGracefulShutdown: { [self] in
      stop.set()
      lock.lock(); let s = service; lock.unlock()
      s?.requestStop()
    }
    withExtendedLifetime(watching) {}
  }
}

/// The coordinator's dashboard: serves once the coordinator's registry exists, until the group shuts down.
public struct DashboardRun: Service {
  public let observer: DashboardObserver
  let coordinator: CoordinatorRun
  let config: CoordinatorConfig
  let log: @Sendable (String) -> Void

  public init(config: CoordinatorConfig, coordinator: CoordinatorRun, observer: DashboardObserver, log: @escaping @Sendable (String) -> Void) {
    self.config = config
    self.coordinator = coordinator
    self.observer = observer
    self.log = log
  }

  public func run() async throws {
    guard let (host, port) = config.dashboard, let service = await coordinator.ready.get() else { return }
    let app = DashboardServer.application(store: service.store, live: observer.live, metrics: observer.metrics, host: host, port: port,
                                          token: config.dashboardToken, signKey: service.signPublic, tryModelTokens: config.tryModelTokens,
                                          provider: config.federation.provider)
    log("dashboard on \(DashboardServer.url(host: host, port: port))")
    try await app.run()
  }
}

/// A node's work: its side of the vocabulary phase when there is one, then the rounds.
public final class NodeRun: Service, @unchecked Sendable {
  let config: NodeConfig
  let make: @Sendable () throws -> NodeService
  let vocabularyLog: @Sendable (String) -> Void
  private let stop = ManagedAtomicFlag()
  private let lock = NSLock()
  private var node: NodeService?

  /// `make` builds the node (after the vocabulary phase, which the node's terms need).
  public init(config: NodeConfig, vocabularyLog: @escaping @Sendable (String) -> Void, make: @escaping @Sendable () throws -> NodeService) {
    self.config = config
    self.vocabularyLog = vocabularyLog
    self.make = make
  }

  public func run() async throws {
    try await withGracefulShutdownHandler {
      if VocabularyPhase.needed(config.federation) {
        // Count tables out, the federation's tokenizer in (SPEC §4.4), before the node can state its terms.
        let client = VocabularyClient(config: config)
        client.log = vocabularyLog
        let stop = self.stop
        nonisolated(unsafe) let c = client
        try await onThread("agora-vocabulary") { try c.run(stop: stop) }
      }
      if stop.isSet { return }
      let n = try make()
      lock.withLock { node = n }
      if stop.isSet { n.requestStop() }
      nonisolated(unsafe) let svc = n
      defer { svc.shutdown() }
      try await onThread("agora-node") { try svc.run() }
    } onGracefulShutdown: { [self] in
      stop.set()
      lock.lock(); let n = node; lock.unlock()
      n?.requestStop()
    }
  }
}

/// Runs `services` as one group with graceful shutdown on SIGTERM and SIGINT; the first service's end (or
/// failure) ends the group, the others' failures are logged and the group goes on.
public func runGroup(_ services: [any Service], label: String) async throws {
  var logger = Logger(label: label)
  logger.logLevel = .warning
  let configs = services.enumerated().map { i, s in
    ServiceGroupConfiguration.ServiceConfiguration(service: s, successTerminationBehavior: i == 0 ? .gracefullyShutdownGroup : .ignore,
                                                   failureTerminationBehavior: i == 0 ? .gracefullyShutdownGroup : .ignore)
  }
  let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: configs, gracefulShutdownSignals: [.sigterm, .sigint],
                                                                    cancellationSignals: [], logger: logger))
  try await group.run()
}
