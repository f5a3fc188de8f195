import AgoraHarness
import AgoraRegistry
@testable import AgoraRounds
import AgoraTestSupport
import Foundation
import Testing

/// `rounds.inner_seconds`: rounds of time, not of steps (issue #37 item 1). Each node trains from hearing the round
/// until the cut-off — `inner_steps` is only a cap — and sends what it trained; the mean weighs each update the same
/// (`rounds.weigh_by = "updates"`, the default then), since each Δ already holds as many steps as its node trained.
@Suite(.serialized) struct RoundsOfTimeTests {
  /// Two real nodes, a cap of 100,000 steps no node reaches in 1.5 s: every update stops at the cut-off (its
  /// steps well under the cap, at least one), every round takes both, the weights recorded are 1 each whatever the
  /// tokens, and the federation learns.
  @Test func nodesTrainUntilTheCutOffAndWeighTheSame() throws {
    let h = try Harness(nodes: [("north", ["de", "sv"]), ("south", ["es", "it"])], rounds: 3, innerSteps: 100_000, quorum: 1.0, deadline: 60,
                        extra: "inner_seconds = 1.5\nscore_updates = false", compression: "int4")
    defer { h.cleanup() }
    let fed = try FederationConfig(path: h.dir + "/federation.toml")
    #expect(fed.innerSeconds == 1.5 && fed.weighBy == .updates)
    let c = try h.coordinator()
    let nodes = [try h.node("north"), try h.node("south")]
    let finished = h.wait(c, seconds: 240)
    for n in nodes { _ = h.wait(n, seconds: 30) }
    let log = h.read("coordinator.log")
    #expect(finished && c.terminationStatus == 0, "coordinator: \(log)")
    #expect(h.rows().map { $0[2] } == ["2/2", "2/2", "2/2"], "\(h.rows())")
    let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
    let contributions = try store.contributions()
    #expect(contributions.count == 6)
    for k in contributions {
      #expect(k.steps >= 1 && k.steps < 100_000, "\(k.name) round \(k.round): \(k.steps) steps, stopped by the cut-off")
      #expect(k.weight == 1, "\(k.name) round \(k.round): weight \(k.weight) for \(k.tokens) tokens")
      #expect(k.tokens > 0, "\(k.name): \(k.tokens) tokens for \(k.steps) steps")
    }
    let rows = h.table()
    let initial = log.split(separator: "\n").filter { $0.contains("→") }.compactMap { Double($0.split(separator: " ")[1]) }
    let start = initial.reduce(0, +) / Double(max(1, initial.count))
    #expect(rows.count == 3 && rows.last!.1 < start, "bits/byte went from \(start) to \(rows.last?.1 ?? .nan)")
  }

  /// The settings are checked: the cut-off comes before the deadline, and secure aggregation keeps weighing by steps;
  /// without rounds of time the weights stay the tokens, and `weigh_by` may be set either way.
  @Test func theSettingsAreChecked() throws {
    func config(_ extra: String) throws -> FederationConfig {
      let h = try Harness(nodes: [("north", ["de"])], rounds: 2, innerSteps: 40, deadline: 30, extra: extra)
      defer { h.cleanup() }
      return try FederationConfig(path: h.dir + "/federation.toml")
    }
    #expect { _ = try config("inner_seconds = 30") } throws: { ($0 as? ConfigError)?.key == "rounds.inner_seconds" }
    #expect { _ = try config("weigh_by = \"updates\"\nsecure_aggregation = true") } throws: { ($0 as? ConfigError)?.key == "rounds.weigh_by" }
    #expect { _ = try config("weigh_by = \"steps\"") } throws: { ($0 as? ConfigError)?.key == "rounds.weigh_by" }
    #expect(try config("").weighBy == .tokens)
    #expect(try config("inner_seconds = 10\nweigh_by = \"tokens\"").weighBy == .tokens)
    #expect(try config("weigh_by = \"updates\"").weighBy == .updates)
    #expect(try config("inner_seconds = 10\nweigh_by = \"per_step\"").weighBy == .per_step)
  }
}
