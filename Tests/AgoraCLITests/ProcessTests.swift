import AgoraHarness
import AgoraRounds
import AgoraServices
import Foundation
import Testing

/// What `agora coordinator` and `agora node` run is built by `CoordinatorProcess` and `NodeProcess`: the CLI
/// parses arguments and hands them over. (Every federation test runs these processes whole.)
@Suite struct ProcessTests {
  @Test func aCoordinatorProcessIsItsRoundsAndItsDashboardWhenTheConfigServesOne() throws {
    let h = try Harness(nodes: [("alice", ["de"])], rounds: 1, innerSteps: 1)
    defer { h.cleanup() }
    var cfg = try CoordinatorConfig(path: h.dir + "/coordinator.toml")
    let plain = try CoordinatorProcess(config: cfg, log: { _ in })
    #expect(plain.dashboard == nil)
    #expect(plain.services.count == 1)
    #expect((plain.services.first as? CoordinatorRun) === plain.rounds)
    cfg.dashboard = ("127.0.0.1", 47_180)
    let served = try CoordinatorProcess(config: cfg, events: h.dir + "/coordinator.events", log: { _ in })
    #expect(served.services.count == 2)
    #expect((served.services.first as? CoordinatorRun) === served.rounds, "the rounds come first: their end ends the group")
    #expect(served.services.last is DashboardRun)
    #expect(FileManager.default.fileExists(atPath: h.dir + "/coordinator.events"), "the event file is opened when the process is built")
  }

  @Test func anEventFileThatCannotBeOpenedIsRefusedBeforeAnythingRuns() throws {
    let h = try Harness(nodes: [("alice", ["de"])], rounds: 1, innerSteps: 1)
    defer { h.cleanup() }
    let bad = h.dir + "/no-such-directory/events"
    let coordinator = try CoordinatorConfig(path: h.dir + "/coordinator.toml")
    let e1 = #expect(throws: ConfigError.self) { _ = try CoordinatorProcess(config: coordinator, events: bad, log: { _ in }) }
    #expect(e1?.file == bad && e1?.key == "--events")
    let node = try NodeConfig(path: h.dir + "/alice.toml")
    let e2 = #expect(throws: ConfigError.self) { _ = try NodeProcess(config: node, events: bad, log: { _ in }) }
    #expect(e2?.file == bad && e2?.key == "--events")
  }
}
