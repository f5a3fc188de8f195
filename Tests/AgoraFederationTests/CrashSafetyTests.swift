import AgoraCrypto
@testable import AgoraRounds
import AgoraRegistry
import AgoraHarness
import AgoraTestSupport
import AgoraTransport
import AgoraWire
import Foundation
import Testing

/// The coordinator's registry under crashes, corruption and its command-line tools.
@Suite(.serialized) struct RegistryTests {
  /// SIGKILL of the coordinator at every stage of a round — before aggregation, after it, in the middle of
  /// writing a version (weights written, optimizer state and commit not), right after a commit — and a restart
  /// each time: it resumes from the last committed version, the nodes (never restarted) reconnect and rejoin by
  /// themselves, no version is lost or half-written, and `agora verify` passes.
  @Test func coordinatorKilledAtEveryStageResumesAndVerifies() throws {
    // Every round must make a version for the faults to fire where they are aimed: updates are not scored here
    // (a tiny model's noisy late update may be refused by the score, and the round then makes none).
    let h = try Harness(nodes: [("east", ["de", "pl"]), ("west", ["fr", "es"])], rounds: 7, innerSteps: 5, quorum: 1.0, deadline: 12,
                        extra: "score_updates = false")
    defer { h.cleanup() }
    let nodes = try h.nodes.map { try h.node($0) }
    defer { for n in nodes where n.isRunning { n.terminate() } }
    var committed: [Int] = []  // the latest committed version after each crash
    for (i, point) in ["before-step@2", "mid-write@3", "after-step@4", "after-commit@5"].enumerated() {
      let c = try h.coordinator(env: ["AGORA_FAULT": point], log: "coordinator-\(i).log")
      #expect(h.wait(c, seconds: 120), "the coordinator reached \(point)")
      #expect(c.terminationReason == .uncaughtSignal && c.terminationStatus == SIGKILL, "killed at \(point): \(h.read("coordinator-\(i).log"))")
      let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
      let latest = try #require(try store.latestVersion())
      committed.append(latest.number)
      // Nothing half-written: every version's blobs are whole, temporary files aside.
      #expect(try store.verify(signKey: try EnrolmentCard.load(h.dir + "/keys/coordinator/card.toml").signPublic).ok)
    }
    // mid-write of round 3 never committed version 3; after-commit of round 5 did commit version 5.
    #expect(committed[1] <= 2 && committed[3] >= 5, "committed versions after each crash: \(committed)")
    let last = try h.coordinator(log: "coordinator-final.log")
    #expect(h.wait(last, seconds: 180) && last.terminationStatus == 0, "\(h.read("coordinator-final.log"))")
    let finalLog = h.read("coordinator-final.log")
    print("committed after each crash: \(committed)")
    for i in 0..<4 { print(h.read("coordinator-\(i).log")) }
    print(finalLog, h.read("east.log"))
    #expect(finalLog.contains("resuming test-federation from version \(committed[3])"), "\(finalLog)")
    for n in nodes { _ = h.wait(n, seconds: 20) }
    for (i, _) in h.nodes.enumerated() { #expect(!nodes[i].isRunning) }
    #expect(["east.log", "west.log"].contains { h.events(log: $0).contains { $0["event"] as? String == "joined" && $0["again"] as? Bool == true } },
            "nodes rejoined by themselves")

    // The registry: versions 0…N in one chain, every round of the federation recorded once, verify passes.
    let (status, verify) = try h.run(["verify", "--config", h.dir + "/coordinator.toml"])
    #expect(status == 0 && verify.contains("all versions verify"), "\(verify)")
    let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
    let versions = try store.versions()
    #expect(versions.map(\.number) == Array(0..<versions.count), "no version lost: \(versions.map(\.number))")
    #expect(versions.dropFirst().allSatisfy { $0.parent == $0.number - 1 })
    #expect(try store.rounds().last?.number == 7)
    #expect(!((try? FileManager.default.contentsOfDirectory(atPath: h.dir + "/coordinator/blobs")) ?? []).contains { $0.contains(".tmp") })
    let (_, list) = try h.run(["versions", "--config", h.dir + "/coordinator.toml"])
    #expect(list.split(separator: "\n").count == versions.count + 1, "\(list)")
    let (_, show) = try h.run(["show", "--config", h.dir + "/coordinator.toml"])
    #expect(show.contains("signature  valid") && show.contains("east") && show.contains("west"), "\(show)")

    // A tampered blob: verify fails and says which.
    let victim = store.blobPath(versions[1].hash)
    var bytes = try Data(contentsOf: URL(fileURLWithPath: victim))
    bytes[100] ^= 0xFF
    try bytes.write(to: URL(fileURLWithPath: victim))
    let (bad, report) = try h.run(["verify", "--config", h.dir + "/coordinator.toml"])
    #expect(bad != 0 && report.contains("does not hash to its name"), "\(report)")
    bytes[100] ^= 0xFF
    try bytes.write(to: URL(fileURLWithPath: victim))

    // gc keeps the newest two and the latest's optimizer state; records stay, freed versions are marked.
    let (gcStatus, gc) = try h.run(["gc", "--config", h.dir + "/coordinator.toml", "--keep-last", "2"])
    #expect(gcStatus == 0 && gc.contains("freed \(versions.count - 2) versions"), "\(gc)")
    let (after, verified) = try h.run(["verify", "--config", h.dir + "/coordinator.toml"])
    #expect(after == 0, "\(verified)")
    #expect(try store.versions().filter { $0.freedAt != nil }.count == versions.count - 2)
  }

  /// The current version's blob damaged on disk while the coordinator runs (issue 31, probe 2: every later round
  /// ran to its deadline with no update, the nodes told ERROR 5 and waiting): the coordinator finds it when a
  /// node fetches it, writes it again from θ in memory, and the nodes, asking again, get it; every round takes
  /// both updates. Whole versions are broadcast so that every node fetches the damaged blob.
  @Test func aVersionDamagedOnDiskWhileRunningIsRepairedAndRoundsGoOn() throws {
    let h = try Harness(nodes: [("east", ["de"]), ("west", ["fr"])], rounds: 4, innerSteps: 3, quorum: 1.0, deadline: 60,
                        extra: "score_updates = false\nbroadcast = \"full\"")
    defer { h.cleanup() }
    let c = try h.coordinator(env: ["AGORA_FAULT": "corrupt-blob@3"])
    let nodes = try h.nodes.map { try h.node($0) }
    defer { for n in nodes where n.isRunning { n.terminate() } }
    #expect(h.wait(c, seconds: 150) && c.terminationStatus == 0, "\(h.read("coordinator.log"))")
    let log = h.read("coordinator.log")
    print(log)
    #expect(log.contains("fault injection: one octet of"), "the fault fired")
    #expect(log.contains("written again from θ in memory, hash checked, and served again"), "\(log)")
    #expect(h.rows().map { $0[2] } == ["2/2", "2/2", "2/2", "2/2"], "every round took both updates: \(h.rows())")
    let (status, verify) = try h.run(["verify", "--config", h.dir + "/coordinator.toml"])
    #expect(status == 0 && verify.contains("all versions verify"), "\(verify)")
  }

  /// SIGINT in the middle of a round: the coordinator abandons the round whole (nothing of it recorded), finishes
  /// writing the version before it, and exits 0; SIGTERM stops a node cleanly. A restart carries on from there.
  @Test func sigintMidRoundAbandonsTheRoundAndNothingIsHalfWritten() throws {
    let h = try Harness(nodes: [("east", ["de"]), ("west", ["fr"])], rounds: 30, innerSteps: 400, quorum: 1.0, deadline: 120)
    defer { h.cleanup() }
    let c = try h.coordinator()
    let nodes = try h.nodes.map { try h.node($0) }
    defer { for n in nodes where n.isRunning { n.terminate() } }
    // Once round 2 is under way (a node trains it: 400 steps), interrupt.
    #expect(h.waitForRound(2) != nil)
    #expect(h.waitForEvent("evaluated", log: "east.log") { ($0["version"] as? Int) == 1 } != nil, "east scored version 1")
    kill(c.processIdentifier, SIGINT)
    #expect(h.wait(c, seconds: 60), "the coordinator stopped")
    #expect(c.terminationReason == .exit && c.terminationStatus == 0, "\(h.read("coordinator.log"))")
    kill(nodes[0].processIdentifier, SIGTERM)
    #expect(h.wait(nodes[0], seconds: 60) && nodes[0].terminationReason == .exit, "the node stopped on SIGTERM: \(h.read("east.log"))")
    let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
    #expect(try store.rounds().map(\.number) == [1], "round 2 was abandoned whole")
    #expect(try store.versions().map(\.number) == [0, 1])
    let (status, verify) = try h.run(["verify", "--config", h.dir + "/coordinator.toml"])
    #expect(status == 0, "\(verify)")
  }

}
