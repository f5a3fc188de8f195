import AgoraCrypto
import AgoraData
@testable import AgoraRounds
import AgoraModel
import AgoraHarness
import AgoraTestSupport
import AgoraTransport
import AgoraWire
import Foundation
import Testing

@Suite(.serialized) struct FederationTests {
  /// With fp32 updates the coordinator also stages each update in θ's memory and reads θ back
  /// from its version blob (checksum-checked) before each step: the patches nodes apply must still reach
  /// exactly the versions announced.
  @Test(arguments: ["int8", "fp32", "int4", "fp4"])
  func multiProcessFederationLowersValidationLoss(compression: String) throws {
    // Compressed updates stream at once, each in its own staging slot (rounds.concurrent_uploads).
    let h = try Harness(nodes: [("north", ["de", "sv"]), ("south", ["es", "it"])], rounds: 4, innerSteps: 40,
                        extra: compression == "fp32" ? "" : "concurrent_uploads = 2", compression: compression)
    defer { h.cleanup() }
    let c = try h.coordinator()
    let nodes = try h.nodes.map { try h.node($0) }
    let finished = h.wait(c, seconds: 240)
    for n in nodes { _ = h.wait(n, seconds: 15) }
    print(h.read("coordinator.log"))
    #expect(finished && c.terminationStatus == 0, "coordinator: \(h.read("coordinator.log"))")
    let rows = h.table()
    #expect(rows.count == 4)
    let initial = h.read("coordinator.log").split(separator: "\n").filter { $0.contains("→") }.compactMap { Double($0.split(separator: " ")[1]) }
    #expect(!initial.isEmpty)
    let start = initial.reduce(0, +) / Double(initial.count)
    #expect(rows.last!.1 < start - 0.3, "bits/byte went from \(start) to \(rows.last!.1)")
    #expect(rows.last!.1 < rows.first!.1)
    if compression == "fp32" {
      #expect(h.read("coordinator.log").contains("fp32 updates are staged in θ's memory"), "the fp32 path did not stage in θ's memory")
    } else {
      #expect(h.read("coordinator.log").contains("uploads streamed at once (rounds.concurrent_uploads allows 2)"))
    }
    // From round 2 on, nodes holding the previous version take the int8 patch instead of the whole model.
    for name in h.nodes {
      let lines = h.read("\(name).log").split(separator: "\n").filter { $0.contains(": round ") && $0.contains(" steps, ") }
      #expect(lines.count == 4 && lines.dropFirst().allSatisfy { $0.contains("(patch)") }, "\(name): \(lines)")
      // Each update went in the federation's format.
      #expect(lines.allSatisfy { $0.contains("B (\(compression))") }, "\(name): \(lines)")
    }
  }

  @Test func roundCompletesOnQuorumWhenANodeIsKilledAndTheNodeCatchesUp() throws {
    let h = try Harness(nodes: [("a", ["de"]), ("b", ["fr"]), ("c", ["pl"])], rounds: 4, innerSteps: 300, quorum: 0.5, deadline: 60, minNodes: 3)
    defer { h.cleanup() }
    let coord = try h.coordinator()
    var procs = try h.nodes.map { try h.node($0) }
    // Kill node c while it trains round 2: once it has fetched version 1 and scored it (what it does first).
    #expect(h.waitForRound(2) != nil)
    #expect(h.waitForEvent("evaluated", log: "c.log") { ($0["version"] as? Int) == 1 } != nil, "c scored version 1")
    kill(procs[2].processIdentifier, SIGKILL)
    procs[2].waitUntilExit()
    // It restarts at once and must catch up with the latest version (by hash) in a later round.
    procs[2] = try h.node("c", log: "c-restarted.log")
    let finished = h.wait(coord, seconds: 240)
    for p in procs { _ = h.wait(p, seconds: 15) }
    print(h.read("coordinator.log"))
    #expect(finished && coord.terminationStatus == 0)
    let log = h.read("coordinator.log")
    let rows = log.split(separator: "\n").filter { $0.hasPrefix("    ") && $0.contains("|") }
    #expect(rows.count == 4, "\(log)")
    #expect(!log.contains("quorum not reached"), "every round reached quorum")
    #expect(h.events(log: "c-restarted.log").contains { $0["event"] as? String == "update_sent" && ($0["round"] as? Int ?? 0) >= 3 },
            "the restarted node fetched the latest version and trained in a later round: \(h.read("c-restarted.log"))")
    #expect(log.contains("stopped answering") || log.contains("restarted; round 2 goes on without it"), "the killed node was noticed")
    let secondRound = rows.first { $0.hasPrefix("    2 |") } ?? ""
    #expect(secondRound.contains(" 2/3 "), "round 2 completed on the quorum of the two live nodes: \(secondRound)")
    #expect(!secondRound.hasSuffix("60.0"), "round 2 did not wait for its deadline")
  }

  @Test func nanAndEnormousUpdatesAreRejectedAndTheVersionIsUnharmed() throws {
    let h = try Harness(nodes: [("good", ["de"]), ("rogue", ["fr"])], rounds: 2, innerSteps: 30, quorum: 0.5, deadline: 60, minNodes: 2, compression: "fp32")
    defer { h.cleanup() }
    let coord = try h.coordinator()
    let good = try h.node("good")
    // The rogue node speaks the protocol by hand: it joins, and answers each round with a poisoned Δ.
    let (rogue, coordCard, ep) = try h.handClient("rogue")
    defer { ep.close() }
    var outcomes: [String] = []
    let end = Date(timeIntervalSinceNow: 120)
    while outcomes.count < 2 && Date() < end {
      guard let m = ep.receive(timeout: 1), case .success(.round(let r, let base, _, _, _, _, let bytes, _, _, _, _, _)) = m.message else { continue }
      let n = Int(bytes) / 4
      var delta = [Float](repeating: 0.01, count: n)
      if r == 1 { delta[n / 2] = .nan } else { for i in 0..<n { delta[i] = 1e6 } }
      let payload = delta.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .fp32) }
      let sealer = try EnvelopeSealer(context: .init(federation: "test-federation", round: r, baseHash: base, nodeID: rogue.card.nodeID),
                                      payloadLength: UInt64(payload.count), chunkSize: 1 << 20, recipient: coordCard.aggregationPublic!,
                                      signingSecretKey: rogue.signSecret)
      do {
        _ = try UploadSender(endpoint: ep, transfer: r, round: r).send(sealer: sealer, tokens: 512, steps: 1, loss: 0) { i in
          Array(payload[(i << 20)..<min(payload.count, (i + 1) << 20)])
        }
        outcomes.append("round \(r): accepted")
      } catch let TransferError.rejected(code, text) {
        outcomes.append("round \(r): rejected \(code) \(text)")
      }
    }
    #expect(h.wait(coord, seconds: 120) && coord.terminationStatus == 0)
    _ = h.wait(good, seconds: 15)
    let log = h.read("coordinator.log")
    print(log)
    #expect(outcomes.count == 2)
    #expect(outcomes.allSatisfy { $0.contains("rejected \(ErrorCode.rejectedUpdate.rawValue)") }, "\(outcomes)")
    #expect(outcomes.first?.contains("NaN") == true)
    #expect(outcomes.last?.contains("exceeds the bound") == true)
    let rows = h.table()
    #expect(rows.count == 2 && rows.allSatisfy { $0.1.isFinite }, "versions stay finite: \(rows)")
    #expect(log.split(separator: "\n").filter { $0.contains("|  1/2  |") }.count == 2, "each round applied only the good node's update")
  }

  /// A node whose update arrives after its round closed: with `late_updates = "stale"` the coordinator folds it
  /// into the next round with weight ×(1 + 1)^−1; with "drop" it refuses it (ERROR wrong round) with a log line.
  @Test(arguments: ["stale", "drop"])
  func lateUpdateIsAppliedWithStalenessWeightingOrDropped(mode: String) throws {
    let h = try Harness(nodes: [("prompt", ["de"]), ("slow", ["fr"])], rounds: 3, innerSteps: 10, quorum: 0.5, deadline: 6, minNodes: 2,
                        extra: "late_updates = \"\(mode)\"\nstaleness_exponent = 1", compression: "fp32")
    defer { h.cleanup() }
    let coord = try h.coordinator()
    let prompt = try h.node("prompt")
    let (slow, coordCard, ep) = try h.handClient("slow")
    defer { ep.close() }
    var outcomes: [UInt64: String] = [:]
    let end = Date(timeIntervalSinceNow: 90)
    while outcomes[1] == nil && Date() < end {
      guard let m = ep.receive(timeout: 0.5) else { ep.send(.heartbeat); continue }
      guard case .success(.round(let r, let base, _, _, _, let deadlineMs, let bytes, _, _, _, _, _)) = m.message else { continue }
      if r == 1 {
        // Miss the deadline (still sending heartbeats, so the session stays alive).
        while Date().timeIntervalSince1970 * 1000 < Double(deadlineMs) + 800 { Thread.sleep(forTimeInterval: 0.3); ep.send(.heartbeat) }  // behaviour: a node alive (heartbeats) but late, past the deadline
      }
      let payload = [Float](repeating: 1e-5, count: Int(bytes) / 4).withUnsafeBufferPointer { DeltaCodec.encode($0, format: .fp32) }
      let sealer = try EnvelopeSealer(context: .init(federation: "test-federation", round: r, baseHash: base, nodeID: slow.card.nodeID),
                                      payloadLength: UInt64(payload.count), chunkSize: 1 << 20, recipient: coordCard.aggregationPublic!,
                                      signingSecretKey: slow.signSecret)
      var sender = UploadSender(endpoint: ep, transfer: r, round: r)
      sender.ackTimeout = 1
      do {
        _ = try sender.send(sealer: sealer, tokens: 4096, steps: 10, loss: 5) { i in Array(payload[(i << 20)..<min(payload.count, (i + 1) << 20)]) }
        outcomes[r] = "accepted"
      } catch let TransferError.rejected(code, text) {
        outcomes[r] = "rejected \(code) \(text)"
      }
    }
    #expect(h.wait(coord, seconds: 90) && coord.terminationStatus == 0)
    _ = h.wait(prompt, seconds: 15)
    let log = h.read("coordinator.log")
    print(log)
    let rows = log.split(separator: "\n").filter { $0.hasPrefix("    2 |") }
    if mode == "stale" {
      #expect(outcomes[1] == "accepted", "\(outcomes)")
      #expect(log.contains("late update of round 1 from") && log.contains("weight ×0.500"), "the late update was folded in with weight 1/2")
      #expect(rows.count == 1 && rows[0].contains("(+1 late)"), "\(rows)")
    } else {
      #expect(outcomes[1]?.hasPrefix("rejected \(ErrorCode.wrongRound.rawValue)") == true, "\(outcomes)")
      #expect(log.contains("a late update, dropped"))
      #expect(rows.count == 1 && !rows[0].contains("late"), "\(rows)")
    }
    #expect(h.table().count == 3 && h.table().allSatisfy { $0.1.isFinite })
  }

  /// An update still streaming when its round closes goes on into the next round (late_updates = "stale")
  /// and keeps every octet it had staged, although the step in between uses the coordinator's memory (the
  /// patch, and θ read back where fp32 updates were staged): the norm the coordinator logs for it is exactly
  /// that of what the node sent.
  @Test func updateStreamingAcrossTheStepKeepsItsBytes() throws {
    let h = try Harness(nodes: [("prompt", ["de"]), ("slow", ["fr"])], rounds: 3, innerSteps: 10, quorum: 0.5, deadline: 6, minNodes: 2,
                        extra: "late_updates = \"stale\"\nstaleness_exponent = 1", compression: "fp32")
    defer { h.cleanup() }
    let coord = try h.coordinator()
    let prompt = try h.node("prompt")
    let (slow, coordCard, ep) = try h.handClient("slow")
    defer { ep.close() }
    var outcome = ""
    var expectedNorm = 0.0
    let end = Date(timeIntervalSinceNow: 90)
    while outcome.isEmpty && Date() < end {
      guard let m = ep.receive(timeout: 0.5) else { ep.send(.heartbeat); continue }
      guard case .success(.round(let r, let base, _, _, _, let deadlineMs, let bytes, _, _, _, _, _)) = m.message, r == 1 else { continue }
      let values = Int(bytes) / 4
      let delta = (0..<values).map { Float(($0 % 13) - 6) * 1e-5 }
      expectedNorm = delta.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
      let payload = delta.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .fp32) }
      let chunk = 4096
      let sealer = try EnvelopeSealer(context: .init(federation: "test-federation", round: r, baseHash: base, nodeID: slow.card.nodeID),
                                      payloadLength: UInt64(payload.count), chunkSize: chunk, recipient: coordCard.aggregationPublic!,
                                      signingSecretKey: slow.signSecret)
      let half = sealer.head.chunkCount / 2
      // Start late in the round (the prompt node's update is in by then: one upload streams at a time).
      while Date().timeIntervalSince1970 * 1000 < Double(deadlineMs) - 1000 { Thread.sleep(forTimeInterval: 0.3); ep.send(.heartbeat) }  // behaviour: a node alive (heartbeats) but late, past the deadline
      var sender = UploadSender(endpoint: ep, transfer: r, round: r)
      sender.ackTimeout = 2
      do {
        _ = try sender.send(sealer: sealer, tokens: 4096, steps: 10, loss: 5) { i in
          if i == half {
            // Half of it is staged: wait (heartbeats keep the session) until round 1 has closed and stepped.
            while Date().timeIntervalSince1970 * 1000 < Double(deadlineMs) + 2500 { Thread.sleep(forTimeInterval: 0.3); ep.send(.heartbeat) }  // behaviour: a node alive (heartbeats) but late, past the deadline
          }
          return Array(payload[(i * chunk)..<min(payload.count, (i + 1) * chunk)])
        }
        outcome = "accepted"
      } catch let TransferError.rejected(code, text) {
        outcome = "rejected \(code) \(text)"
      }
    }
    #expect(h.wait(coord, seconds: 90) && coord.terminationStatus == 0)
    _ = h.wait(prompt, seconds: 15)
    let log = h.read("coordinator.log")
    print(log)
    #expect(outcome == "accepted", "\(outcome)")
    let line = log.split(separator: "\n").first { $0.contains("late update of round 1 from") }
    let logged = line.flatMap { $0.split(separator: "norm ").last }.flatMap { Double($0.dropLast()) }
    #expect(logged.map { abs($0 - expectedNorm) <= 1e-4 * expectedNorm } == true, "logged \(line.map(String.init) ?? "nothing"), sent norm \(expectedNorm)")
  }

  /// A compute donor has no data: the coordinator cuts the federation's public corpus into shards, assigns it
  /// one per round, and its update counts like an institution's.
  @Test func computeDonorTrainsOnAssignedPublicShards() throws {
    let h = try Harness(nodes: [("inst", ["de"])], rounds: 3, innerSteps: 10, deadline: 60, minNodes: 2,
                        extra: "[public]\ndata = [\"public\"]\nshard_bytes = 8192", donors: ["volunteer"])
    defer { h.cleanup() }
    let coord = try h.coordinator()
    let nodes = try ["inst", "volunteer"].map { try h.node($0) }
    #expect(h.wait(coord, seconds: 120) && coord.terminationStatus == 0)
    for n in nodes { _ = h.wait(n, seconds: 15) }
    let log = h.read("coordinator.log"), donorLog = h.read("volunteer.log")
    print(log, donorLog)
    #expect(log.contains("joined as a compute donor"))
    let assigned = log.split(separator: "\n").filter { $0.contains("(donor) trains on public shard") }
    #expect(assigned.count == 3, "one shard per round: \(assigned)")
    #expect(Set(assigned.map { $0.split(separator: " ").suffix(2).joined(separator: " ") }).count == 3, "a different shard each round")
    #expect(donorLog.split(separator: "\n").filter { $0.contains("public shard") }.count == 3)
    #expect(h.table().count == 3)
    #expect(log.split(separator: "\n").filter { $0.contains("|  2/2  |") }.count == 3, "the donor's update counted in every round")
  }
}
