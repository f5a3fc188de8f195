import AgoraCrypto
@testable import AgoraRounds
import AgoraRegistry
import AgoraHarness
import AgoraTestSupport
import AgoraTransport
import Foundation
import Testing

/// `rounds.overlap_steps`: a node trains the next round's first steps while its update uploads and the
/// coordinator aggregates, then folds the new version in (issue #19).
@Suite(.serialized) struct OverlapTests {
  /// Two real nodes; "north" trains at most 60 of a round's 120 steps (`node.max_steps_per_round`), so it waits
  /// for "south" every round and trains the whole overlap (5 steps) ahead of rounds 2–4. Every update counts the
  /// steps its round took, overlapped ones included; the federation learns as a plain one does; with secure
  /// aggregation the unmasking runs beside the steps. The coordinator announces the round again every 0.1 s to
  /// the nodes still training (`coordinator.wait_report_seconds`; 60 s by default, when rounds last longer): a
  /// repeat queued while north trained must not end its training ahead (it did, and north then waited idle).
  @Test(arguments: [false, true])
  func nodesTrainAheadWhileTheirUpdatesGoOut(secure: Bool) throws {
    let h = try Harness(nodes: [("north", ["de", "sv"]), ("south", ["es", "it"])], rounds: 4, innerSteps: 120, quorum: 1.0, deadline: 120,
                        // Not scored: a tiny model's 60-step update is sometimes refused by the score (worse on its own
                        // windows), and the round then has no version; this test is about the steps trained ahead.
                        extra: "overlap_steps = 5\nscore_updates = false" + (secure ? "\nsecure_aggregation = true" : ""), compression: "int4")
    defer { h.cleanup() }
    if secure { try namesMembers(h) }
    try (String(contentsOfFile: h.dir + "/coordinator.toml", encoding: .utf8) + "\nwait_report_seconds = 0.1\n").write(toFile: h.dir + "/coordinator.toml", atomically: true, encoding: .utf8)
    let c = try h.coordinator()
    try (String(contentsOfFile: h.dir + "/north.toml", encoding: .utf8) + "\nmax_steps_per_round = 60\n").write(toFile: h.dir + "/north.toml", atomically: true, encoding: .utf8)
    let north = try h.node("north")
    let south = try h.node("south")
    let finished = h.wait(c, seconds: 240)
    for n in [north, south] { _ = h.wait(n, seconds: 30) }
    let log = h.read("coordinator.log")
    print(log, h.read("north.log"))
    #expect(finished && c.terminationStatus == 0, "coordinator: \(log)")
    #expect(h.rows().map { $0[2] } == ["2/2", "2/2", "2/2", "2/2"], "\(h.rows())")
    let rows = h.table()
    let initial = log.split(separator: "\n").filter { $0.contains("→") }.compactMap { Double($0.split(separator: " ")[1]) }
    let start = initial.reduce(0, +) / Double(max(1, initial.count))
    #expect(rows.count == 4 && rows.last!.1 < start - 0.3, "bits/byte went from \(start) to \(rows.last?.1 ?? .nan)")
    for name in ["north", "south"] {
      let lines = h.read("\(name).log").split(separator: "\n")
      let sent = lines.filter { $0.contains(": round ") && $0.contains(" steps, loss ") }
      #expect(sent.count == 4 && sent.allSatisfy { $0.contains(name == "north" ? ": 60 steps, " : ": 120 steps, ") }, "\(name): \(sent)")
      let timing = lines.filter { $0.contains(" timing: ") }
      #expect(timing.count == 4, "\(name): \(timing)")
      // Round 1 has nothing ahead of it; later rounds at most the cap.
      let ahead = timing.map { line -> Int in
        guard let r = line.range(of: #"\((\d+) steps\)"#, options: .regularExpression) else { return -1 }
        return Int(line[r].dropFirst().prefix { $0.isNumber }) ?? -1
      }
      #expect(ahead.first == 0 && ahead.allSatisfy { (0...5).contains($0) }, "\(name): \(timing)")
      if name == "north" { #expect(ahead == [0, 5, 5, 5], "north waits for south every round: \(timing)") }
    }
    #expect(log.split(separator: "\n").contains { $0.contains("announced again to") && $0.contains("north") }, "the round was announced again while north trained: \(log)")
    if secure {
      #expect(!log.contains(": norm "), "the coordinator opened an update")
      #expect(log.components(separatedBy: ": unmasked the sum of 2 updates").count - 1 == 4, "\(log)")
    }
  }

  /// The setting is checked: overlapped steps are a round's first, so fewer than any round has.
  @Test func overlapNeedsFewerStepsThanARound() throws {
    let h = try Harness(nodes: [("north", ["de"])], rounds: 2, innerSteps: 40, extra: "overlap_steps = 10\ninner_steps_schedule = [10, 20]")
    defer { h.cleanup() }
    #expect {
      _ = try FederationConfig(path: h.dir + "/federation.toml")
    } throws: { ($0 as? ConfigError)?.key == "rounds.overlap_steps" }
    let ok = try Harness(nodes: [("north", ["de"])], rounds: 2, innerSteps: 40, extra: "overlap_steps = 9\ninner_steps_schedule = [10, 20]")
    defer { ok.cleanup() }
    #expect(try FederationConfig(path: ok.dir + "/federation.toml").overlapSteps == 9)
  }

  /// The coordinator dies after round 2's outer step, while the nodes train ahead and await round 3: the nodes
  /// notice (the restarted coordinator no longer knows their sessions), join again, fold what they trained into
  /// whatever round comes next, and the federation finishes every round.
  @Test func aCoordinatorRestartWhileNodesTrainAheadIsSurvived() throws {
    let h = try Harness(nodes: [("north", ["de"]), ("south", ["fr"])], rounds: 4, innerSteps: 20, quorum: 1.0, deadline: 30,
                        extra: "overlap_steps = 5\nscore_updates = false")
    defer { h.cleanup() }
    try (String(contentsOfFile: h.dir + "/north.toml", encoding: .utf8) + "\nmax_steps_per_round = 10\n").write(toFile: h.dir + "/north.toml", atomically: true, encoding: .utf8)
    let nodes = try h.nodes.map { try h.node($0) }
    defer { for n in nodes where n.isRunning { n.terminate() } }
    let c = try h.coordinator(env: ["AGORA_FAULT": "after-step@2"], log: "coordinator-0.log")
    #expect(h.wait(c, seconds: 120) && c.terminationStatus == SIGKILL, "\(h.read("coordinator-0.log"))")
    let last = try h.coordinator(log: "coordinator-1.log")
    #expect(h.wait(last, seconds: 180) && last.terminationStatus == 0, "\(h.read("coordinator-1.log"))")
    for n in nodes { _ = h.wait(n, seconds: 20) }
    let north = h.read("north.log")
    print(h.read("coordinator-0.log"), h.read("coordinator-1.log"), north)
    #expect(h.read("coordinator-1.log").contains("resuming test-federation"))
    #expect(north.contains("joining again"), "\(north)")
    #expect(nodes.allSatisfy { !$0.isRunning && $0.terminationStatus == 0 })
    let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
    #expect(try store.rounds().last?.number == 4)
    #expect(try store.verify(signKey: try EnrolmentCard.load(h.dir + "/keys/coordinator/card.toml").signPublic).ok)
    // North's rounds after the restart still began with steps trained ahead.
    let ahead = north.split(separator: "\n").filter { $0.contains(" timing: ") && !$0.contains("(0 steps)") }
    #expect(!ahead.isEmpty, "\(north)")
  }
}
