import AgoraCrypto
@testable import AgoraRounds
import AgoraModel
import AgoraRegistry
import AgoraHarness
import AgoraTestSupport
import AgoraTransport
import AgoraWire
import Foundation
import Testing

@Suite(.serialized) struct RobustRoundTests {
  /// One enrolled node answers every round first with an odd update: a huge one in the first round (before any
  /// median exists), all zeros, and a replay of its own update under a new transfer id. None of it shuts the
  /// honest node out, counts twice, or stops the coordinator.
  /// The score (check 6) is off here: it is another test's subject, and from a version 0 that is not warm-started
  /// an honest update of round 2 was, in two full-suite runs (2026-11-29), 0.66% worse on the coordinator's four German
  /// windows than the version it started from, and refused (the score test warm-starts for that reason).
  @Test func oddUpdatesFromOneNodeNeitherCountTwiceNorShutOutTheOthers() throws {
    let h = try Harness(nodes: [("honest", ["de"]), ("rogue", ["fr"])], rounds: 3, innerSteps: 10, quorum: 0.5, deadline: 60, minNodes: 2,
                        extra: "score_updates = false")
    defer { h.cleanup() }
    let (coord, honest, rogue) = try h.coordinatorWith(node: "honest", hand: "rogue")
    defer { rogue.ep.close() }
    var outcomes: [String] = []
    for _ in 0..<3 {
      guard let r = rogue.nextRound() else { break }
      let n = r.bytes / 4
      switch r.round {
      case 1:
        // 0.5 per parameter: below ten times the model's norm, far above what 10 AdamW steps at lr 5e-3 can do.
        outcomes.append("1 big: " + (try rogue.send([Float](repeating: 0.5, count: n), round: 1, base: r.base, transfer: 1)))
        outcomes.append("1 retry: " + (try rogue.send([Float](repeating: 1e-4, count: n), round: 1, base: r.base, transfer: 2)))
      case 2:
        outcomes.append("2 zeros: " + (try rogue.send([Float](repeating: 0, count: n), round: 2, base: r.base, transfer: 3)))
      default:
        // An update along the last outer step passes every check once.
        let d = try rogue.lastStep(r.patch, values: n)
        outcomes.append("3 first: " + (try rogue.send(d, round: r.round, base: r.base, transfer: 4)))
        outcomes.append("3 replay: " + (try rogue.send(d, round: r.round, base: r.base, transfer: 5)))
      }
    }
    #expect(h.wait(coord, seconds: 120) && coord.terminationStatus == 0, "\(h.read("coordinator.log"))")
    _ = h.wait(honest, seconds: 15)
    let log = h.read("coordinator.log")
    print(log, outcomes)
    #expect(outcomes.count == 5, "\(outcomes)")
    #expect(outcomes.first { $0.hasPrefix("1 big") }?.contains("rejected \(ErrorCode.rejectedUpdate.rawValue): update norm") == true, "\(outcomes)")
    #expect(outcomes.first { $0.hasPrefix("1 big") }?.contains("H·lr·√P") == true, "\(outcomes)")
    #expect(outcomes.first { $0.hasPrefix("1 retry") }?.contains("rejected \(ErrorCode.duplicate.rawValue)") == true, "\(outcomes)")
    #expect(outcomes.first { $0.hasPrefix("2 zeros") }?.contains("all zeros") == true, "\(outcomes)")
    #expect(outcomes.first { $0.hasPrefix("3 first") } == "3 first: accepted", "\(outcomes)")
    #expect(outcomes.first { $0.hasPrefix("3 replay") }?.contains("rejected \(ErrorCode.duplicate.rawValue)") == true, "\(outcomes)")
    let rows = h.rows()
    #expect(rows.count == 3, "\(rows)")
    #expect(rows.map { $0[2] } == ["1/2", "1/2", "2/2"], "the honest update counted every round, the rogue's once in round 3: \(rows)")
    #expect(rows.map { $0[1] } == ["1", "2", "3"], "every round made a version")
  }

  /// The score (SPEC §7.1, check 6): an update that, applied to the current version, makes its own languages
  /// worse is refused. Version 0 is warm-started on public text (as the recipe does; from random weights
  /// held-out loss says nothing of direction and nothing is scored: SPEC §7.1). Two nodes train honestly on
  /// German, a third trains on it too and sends −Δ: the score refuses the flipped update in every round, while
  /// the honest updates, nearly flat late ones included (within `rounds.score_tolerance`), count in every round.
  /// (Without the warm start, 2 runs in 6 had an honest round-2 update 0.7–0.85% worse on the four scoring
  /// windows, and refused.)
  @Test func aSignFlippedUpdateIsRefusedByTheScore() throws {
    let h = try Harness(nodes: [("honest", ["de"]), ("steady", ["de"]), ("flipper", ["de"])], rounds: 4, innerSteps: 30, quorum: 0.5, deadline: 60,
                        minNodes: 3, extra: "[public]\ndata = [\"public\"]", warmStart: 40)
    defer { h.cleanup() }
    let coord = try h.coordinator()
    let honest = try h.node("honest"), steady = try h.node("steady"), flipper = try h.node("flipper", env: ["AGORA_ADVERSARY": "flipper:signflip"])
    #expect(h.wait(coord, seconds: 120) && coord.terminationStatus == 0, "\(h.read("coordinator.log"))")
    for p in [honest, steady, flipper] { _ = h.wait(p, seconds: 15) }
    let log = h.read("coordinator.log")
    print(log)
    let refused = log.split(separator: "\n").filter { $0.contains("rejected: applied to the current version, the update takes de from") }
    #expect(refused.count == 4, "the flipped update refused by the score in rounds 1–4: \(refused)")
    let rows = h.rows()
    #expect(rows.count == 4, "\(rows)")
    #expect(rows.map { $0[2] } == ["2/3", "2/3", "2/3", "2/3"], "only the honest updates count: \(rows)")
    #expect(rows.map { $0[1] } == ["1", "2", "3", "4"], "every round made a version")
    for name in ["honest", "steady"] {
      let id = log.split(separator: "\n").first { $0.contains("\(name) (") && $0.hasSuffix(") joined") }
        .map { String($0.split(separator: "(")[1].prefix(12)) } ?? "?"
      #expect(id != "?" && !log.split(separator: "\n").contains { $0.contains("from \(id) rejected") }, "\(name)'s updates are never refused")
    }
  }

  /// Second moments where the federation wants none, and none where it wants them: refused, saying which.
  @Test(arguments: [0.0, 0.5])
  func momentsMustMatchTheFederation(alpha: Double) throws {
    let h = try Harness(nodes: [("rogue", ["fr"])], rounds: 1, innerSteps: 10, quorum: 0.5, deadline: 20, minNodes: 1,
                        extra: "moment_weighting = \(alpha)")
    defer { h.cleanup() }
    let coord = try h.coordinator()
    var rogue = try HandNode(h, "rogue")
    defer { rogue.ep.close() }
    #expect(rogue.moments == (alpha > 0))
    rogue.moments.toggle()
    let r = try #require(rogue.nextRound())
    let outcome = try rogue.send([Float](repeating: 1e-4, count: r.bytes / 4), round: r.round, base: r.base, transfer: 1)
    #expect(h.wait(coord, seconds: 60) && coord.terminationStatus == 0, "\(h.read("coordinator.log"))")
    #expect(outcome.hasPrefix("rejected \(ErrorCode.rejectedUpdate.rawValue): update's second moments: the update carries "
                              + (alpha > 0 ? "no second moments" : "second moments; this federation does not")), "\(outcome)")
  }

  /// An update in another format than the federation's (`rounds.compression`) is refused.
  @Test func anUpdateInAnotherFormatThanTheFederationsIsRefused() throws {
    let h = try Harness(nodes: [("rogue", ["fr"])], rounds: 3, innerSteps: 10, quorum: 0.5, deadline: 30, minNodes: 1)
    defer { h.cleanup() }
    let coord = try h.coordinator()
    var rogue = try HandNode(h, "rogue")
    defer { rogue.ep.close() }
    var outcomes: [String] = []
    for _ in 0..<3 {
      guard let r = rogue.nextRound() else { break }
      // With and without the second moments the federation asks for: refused for its format either way.
      rogue.moments = r.round != 2
      outcomes.append(try rogue.send([Float](repeating: 1e-30, count: r.bytes / 4), round: r.round, base: r.base, transfer: r.round, format: .fp32))
    }
    #expect(h.wait(coord, seconds: 90) && coord.terminationStatus == 0, "\(h.read("coordinator.log"))")
    let log = h.read("coordinator.log")
    print(log, outcomes)
    #expect(outcomes.allSatisfy { $0.contains("format fp32") }, "an fp32 update in an int8 federation is refused: \(outcomes)")
    #expect(h.rows().allSatisfy { $0[1] == "0" })
  }

  /// Updates so small that the step leaves every parameter bit-identical: no version is made (a version number
  /// always names new content), the round says so, and the coordinator goes on (it used to exit on the
  /// registry's UNIQUE constraint).
  @Test func aStepThatChangesNothingMakesNoVersion() throws {
    let h = try Harness(nodes: [("rogue", ["fr"])], rounds: 3, innerSteps: 10, quorum: 0.5, deadline: 30, minNodes: 1, compression: "fp32")
    defer { h.cleanup() }
    let coord = try h.coordinator()
    let rogue = try HandNode(h, "rogue")
    defer { rogue.ep.close() }
    var outcomes: [String] = []
    // 1e-20 on the first layer norm's first weight (1.0 in version 0), zero elsewhere: the outer step rounds away.
    let lnWeight = ParameterLayout(try GPTConfig.preset("tiny").withVocab(512)).tensor(named: "h.0.ln_1.weight")!.offset
    for _ in 0..<3 {
      guard let r = rogue.nextRound() else { break }
      var d = [Float](repeating: 0, count: r.bytes / 4)
      d[lnWeight] = 1e-20
      outcomes.append(try rogue.send(d, round: r.round, base: r.base, transfer: r.round, format: .fp32))
    }
    #expect(h.wait(coord, seconds: 90) && coord.terminationStatus == 0, "\(h.read("coordinator.log"))")
    let log = h.read("coordinator.log")
    print(log, outcomes)
    #expect(outcomes == ["accepted", "accepted", "accepted"], "\(outcomes)")
    let rows = h.rows()
    #expect(rows.count == 3 && rows.allSatisfy { $0[1] == "0" && $0.last!.contains("(no change)") }, "\(rows)")
    #expect(log.contains("no new version"))
  }

  /// A node killed while its upload streams (it holds the one upload slot) must not stall the others until the
  /// deadline: once its session expires, its transfer is forgotten and the next upload streams.
  @Test func aNodeThatDiesMidUploadDoesNotStallTheRound() throws {
    let h = try Harness(nodes: [("honest", ["de"]), ("dying", ["fr"])], rounds: 1, innerSteps: 10, quorum: 0.5, deadline: 45, minNodes: 2)
    defer { h.cleanup() }
    let (coord, honest, dying) = try h.coordinatorWith(node: "honest", hand: "dying")
    guard let r = dying.nextRound() else { Issue.record("no round"); return }
    // Small chunks, and the sender stops half-way: the slot stays taken; then the node goes silent for good.
    _ = try? dying.send((0..<(r.bytes / 4)).map { Float($0 % 5) * 1e-4 }, round: 1, base: r.base, transfer: 1, chunk: 4096, stopAfter: 10)
    dying.ep.close()
    #expect(h.wait(coord, seconds: 60) && coord.terminationStatus == 0)
    _ = h.wait(honest, seconds: 15)
    let log = h.read("coordinator.log")
    print(log)
    let rows = h.rows()
    #expect(rows.count == 1 && rows[0][2] == "1/2", "the honest update made the round: \(rows)")
    #expect((rows.first.flatMap { Double($0.last!.split(separator: " ").first ?? "") } ?? 99) < 30, "the round did not wait for its 45 s deadline: \(rows)")
    #expect(log.contains("abandoned: its session ended"))
  }

  /// Nodes that give up are not waited for: one says it abandons the round (ERROR about the round), another
  /// sends LEAVE. The round closes as soon as the remaining node has delivered.
  @Test func nodesThatGiveUpAreNotWaitedFor() throws {
    let h = try Harness(nodes: [("honest", ["de"]), ("quitter", ["fr"]), ("leaver", ["pl"])], rounds: 1, innerSteps: 10, quorum: 0.3, deadline: 40,
                        minNodes: 3)
    defer { h.cleanup() }
    let coord = try h.coordinator()
    let honest = try h.node("honest")
    let quitter = try HandNode(h, "quitter"), leaver = try HandNode(h, "leaver")
    defer { quitter.ep.close(); leaver.ep.close() }
    guard quitter.nextRound() != nil, leaver.nextRound() != nil else { Issue.record("no round"); return }
    quitter.ep.send(.error(code: ErrorCode.internalError.rawValue, message: "node abandons round 1: the test", subject: .round(1)))
    leaver.ep.send(.leave(kind: .session, reason: "node stopping"))
    #expect(h.wait(coord, seconds: 60) && coord.terminationStatus == 0)
    _ = h.wait(honest, seconds: 15)
    let log = h.read("coordinator.log")
    print(log)
    let rows = h.rows()
    #expect(rows.count == 1 && rows[0][2] == "1/3", "\(rows)")
    #expect((rows.first.flatMap { Double($0.last!.split(separator: " ").first ?? "") } ?? 99) < 20, "the round did not wait for its deadline: \(rows)")
    #expect(log.contains("abandons round 1: the test") && log.contains("left; round 1 goes on without it"))
  }

  /// What every party must agree on is checked at JOIN: a node set to another batch, or holding a tokenizer of
  /// the same size but other merges, is refused with an error that names the difference, and stops.
  @Test func aNodeWithOtherTermsIsRefusedAtJoinWithTheDifference() throws {
    let h = try Harness(nodes: [("honest", ["de"]), ("batchy", ["fr"]), ("othertok", ["pl"])], rounds: 1, innerSteps: 5, minNodes: 1)
    defer { h.cleanup() }
    let fed = try String(contentsOfFile: h.dir + "/federation.toml", encoding: .utf8)
    try fed.replacingOccurrences(of: "batch = 8", with: "batch = 64").write(toFile: h.dir + "/federation-batchy.toml", atomically: true, encoding: .utf8)
    // Same vocabulary size, other merges (learned from other text).
    var bpe = BPETrainer()
    bpe.addLanguage("pl", texts: [try String(contentsOfFile: h.dir + "/data/pl/train.txt", encoding: .utf8)])
    try bpe.train(vocabSize: 512).save(to: h.dir + "/tokenizer-other.json")
    try fed.replacingOccurrences(of: "tokenizer = \"tokenizer.json\"", with: "tokenizer = \"tokenizer-other.json\"")
      .write(toFile: h.dir + "/federation-othertok.toml", atomically: true, encoding: .utf8)
    for n in ["batchy", "othertok"] {
      let t = try String(contentsOfFile: h.dir + "/\(n).toml", encoding: .utf8)
      try t.replacingOccurrences(of: "federation = \"federation.toml\"", with: "federation = \"federation-\(n).toml\"")
        .write(toFile: h.dir + "/\(n).toml", atomically: true, encoding: .utf8)
    }
    let coord = try h.coordinator()
    let bad = try ["batchy", "othertok"].map { try h.node($0) }
    for p in bad { #expect(h.wait(p, seconds: 30) && p.terminationStatus != 0, "a refused node stops") }
    let honest = try h.node("honest")
    #expect(h.wait(coord, seconds: 90) && coord.terminationStatus == 0)
    _ = h.wait(honest, seconds: 15)
    let log = h.read("coordinator.log")
    print(log, h.read("batchy.log"), h.read("othertok.log"))
    func refusal(_ log: String) -> String { h.events(log: log).first { $0["event"] as? String == "refused" }?["reason"] as? String ?? "" }
    #expect(refusal("batchy.log").contains("batch: node 64, federation 8"), "\(h.read("batchy.log"))")
    #expect(refusal("othertok.log").contains("tokenizer: node"), "\(h.read("othertok.log"))")
    #expect(log.contains("batchy (") && log.contains("refused at JOIN: batch: node 64, federation 8"))
    #expect(h.rows().count == 1 && h.rows()[0][2] == "1/1")
  }

  /// `rounds.inner_steps_schedule`: ROUND announces each round's steps from the schedule and nodes train them; a
  /// node whose schedule differs (same `inner_steps`, so JOIN lets it in) abandons the round whose steps differ,
  /// saying which, and trains the rounds where the two agree.
  @Test func theInnerStepsScheduleIsAnnouncedAndANodeWithAnotherIsToldWhichRound() throws {
    let h = try Harness(nodes: [("a", ["de"]), ("b", ["fr"])], rounds: 3, innerSteps: 6, quorum: 0.5, deadline: 30, minNodes: 2,
                        extra: "inner_steps_schedule = [2, 4]")
    defer { h.cleanup() }
    let fed = try String(contentsOfFile: h.dir + "/federation.toml", encoding: .utf8)
    try fed.replacingOccurrences(of: "inner_steps_schedule = [2, 4]", with: "inner_steps_schedule = [3, 4]")
      .write(toFile: h.dir + "/federation-b.toml", atomically: true, encoding: .utf8)
    let t = try String(contentsOfFile: h.dir + "/b.toml", encoding: .utf8)
    try t.replacingOccurrences(of: "federation = \"federation.toml\"", with: "federation = \"federation-b.toml\"")
      .write(toFile: h.dir + "/b.toml", atomically: true, encoding: .utf8)
    let coord = try h.coordinator()
    let a = try h.node("a"), b = try h.node("b")
    #expect(h.wait(coord, seconds: 90) && coord.terminationStatus == 0, "\(h.read("coordinator.log"))")
    for p in [a, b] { _ = h.wait(p, seconds: 15) }
    let (la, lb) = (h.read("a.log"), h.read("b.log"))
    print(h.read("coordinator.log"), la, lb)
    for (r, steps) in [(1, 2), (2, 4), (3, 6)] { #expect(la.contains("a: round \(r): \(steps) steps,"), "a trains round \(r) for \(steps) steps: \(la)") }
    #expect(lb.contains("round 1 abandoned: the round asks batch 8, learning rate 0.005, 2 steps; this node is set to batch 8, learning rate 0.005, 3 steps in round 1"),
            "\(lb)")
    #expect(!lb.contains("b: round 1: 3 steps,") && lb.contains("b: round 2: 4 steps,") && lb.contains("b: round 3: 6 steps,"), "\(lb)")
    #expect(h.rows().map { $0[2] } == ["1/2", "2/2", "2/2"], "\(h.rows())")
  }

  /// A missing or empty enrolment directory is a configuration error that names the key (an empty one used to
  /// leave the coordinator waiting for ever while it refused everyone); with no node connected, rounds are not
  /// held; a stranger's refused key is logged as its card shows it (curve_public), with its address (issue 31).
  @Test func noEnrolmentNoRoundsAndStrangersAreLogged() throws {
    let h = try Harness(nodes: [("a", ["de"])], rounds: 50, innerSteps: 5, deadline: 1, minNodes: 1)
    defer { h.cleanup() }
    let cfg = try String(contentsOfFile: h.dir + "/coordinator.toml", encoding: .utf8)
    try cfg.replacingOccurrences(of: "enrolled = \"keys/enrolled\"", with: "enrolled = \"keys/missing\"")
      .write(toFile: h.dir + "/coordinator.toml", atomically: true, encoding: .utf8)
    var (status, out) = try h.run(["coordinator", "--config", h.dir + "/coordinator.toml"])
    #expect(status != 0 && out.contains("coordinator.enrolled") && out.contains("does not exist"), "\(out)")
    try FileManager.default.createDirectory(atPath: h.dir + "/keys/missing", withIntermediateDirectories: true)
    (status, out) = try h.run(["coordinator", "--config", h.dir + "/coordinator.toml"])
    #expect(status != 0 && out.contains("coordinator.enrolled") && out.contains("holds no enrolment card"), "\(out)")
    try cfg.write(toFile: h.dir + "/coordinator.toml", atomically: true, encoding: .utf8)
    let coord = try h.coordinator()
    // A key nobody enrolled: a stranger.
    let me = try Identity.generate(in: h.dir + "/keys/stranger", name: "stranger", institution: "nowhere", contact: "", coordinator: false)
    let card = try EnrolmentCard.load(h.dir + "/keys/coordinator/card.toml")
    let ep = try Endpoint.client(connect: "tcp://127.0.0.1:\(h.port)", serverKey: card.curvePublic, keys: CurveKeys(publicKey: me.card.curvePublic, secretKey: me.curveSecret))
    ep.send(.heartbeat)
    #expect(ep.receive(timeout: 2) == nil, "a stranger gets silence")
    ep.close()
    #expect(waitUntil(60) { let l = h.read("coordinator.log"); return l.contains("refused CURVE connection") && l.contains("round 1 waits for one") })
    kill(coord.processIdentifier, SIGTERM)
    #expect(h.wait(coord, seconds: 20))
    let log = h.read("coordinator.log")
    print(log)
    #expect(log.contains("waiting for 1 node to join") && log.contains("round 1 waits for one"))
    #expect(h.rows().isEmpty, "no round was held: \(h.rows())")
    let line = log.split(separator: "\n").first { $0.contains("refused CURVE connection") } ?? ""
    #expect(line.contains("curve_public = \"\(me.card.curvePublicZ85)\"") && line.contains("127.0.0.1"), "the stranger's card key and address are logged: \(line)")
  }

  /// JOIN repeated on the same connection (a node's JOIN loop resends it every 2.5 s until WELCOME, which a
  /// busy coordinator answers late) is the same session: the node keeps its place in the round it was
  /// selected for. (Treated as a restart, a bench-14m node lost round 1 over emulated wide-area links.)
  @Test func joinRepeatedOnTheSameConnectionKeepsTheNodeInItsRound() throws {
    let h = try Harness(nodes: [("hand", ["de"])], rounds: 1, innerSteps: 5, deadline: 30, minNodes: 1, compression: "fp32")
    defer { h.cleanup() }
    let coord = try h.coordinator()
    let hand = try HandNode(h, "hand")
    let r = try #require(hand.nextRound(seconds: 60))
    // The JOINs and the upload share the connection, so the coordinator reads them in this order.
    for _ in 0..<3 { hand.ep.send(.join(name: "hand", software: "test", latestVersion: r.base, role: 0, terms: try h.terms())) }
    let answer = try hand.send((0..<(r.bytes / 4)).map { Float(($0 % 9) - 4) * 1e-4 }, round: r.round, base: r.base, transfer: r.round, format: .fp32)
    #expect(answer == "accepted")
    _ = h.wait(coord, seconds: 30)
    let log = h.read("coordinator.log")
    #expect(!log.contains("restarted") && log.contains("1/1"), "\(log)")
    #expect(log.components(separatedBy: "joined").count - 1 == 1, "one session, logged once: \(log)")
  }

  /// A version is announced only once it is committed: a coordinator killed while writing version 1 never told
  /// a node about version 1, and after the restart every version number a node saw names one hash.
  @Test func onlyCommittedVersionsAreAnnounced() throws {
    let h = try Harness(nodes: [("hand", ["de"])], rounds: 3, innerSteps: 5, deadline: 30, minNodes: 1, compression: "fp32")
    defer { h.cleanup() }
    var seen: [(run: Int, round: UInt64, version: UInt64, hash: [UInt8])] = []
    for run in 0..<2 {
      let coord = try h.coordinator(env: run == 0 ? ["AGORA_FAULT": "mid-write@1"] : [:], log: "coordinator.log")
      let hand = try HandNode(h, "hand")
      let end = Date(timeIntervalSinceNow: 60)
      while coord.isRunning && Date() < end {
        guard let r = hand.nextRound(seconds: 2) else { continue }
        seen.append((run, r.round, r.version, r.base))
        _ = try? hand.send((0..<(r.bytes / 4)).map { Float(($0 % 9) - 4) * 1e-4 }, round: r.round, base: r.base, transfer: r.round, format: .fp32)
      }
      hand.ep.close()
      _ = h.wait(coord, seconds: 30)
    }
    print(h.read("coordinator.log"), seen.map { "\($0.run) r\($0.round) v\($0.version) \(hex($0.hash).prefix(12))" })
    #expect(seen.filter { $0.run == 0 }.allSatisfy { $0.version == 0 }, "the killed coordinator announced no uncommitted version")
    var byVersion: [UInt64: [UInt8]] = [:]
    for s in seen {
      if let h0 = byVersion[s.version] { #expect(h0 == s.hash, "version \(s.version) named two models") } else { byVersion[s.version] = s.hash }
    }
    #expect(seen.contains { $0.run == 1 && $0.version >= 1 }, "the restarted coordinator went on")
  }

  /// A coordinator stopped with SIGTERM ends the sessions but not the federation: the node waits, joins the
  /// restarted coordinator and trains the remaining rounds; LEAVE kind "finished" ends it after the last one.
  @Test func nodesOutliveACoordinatorRestart() throws {
    let h = try Harness(nodes: [("steady", ["de"])], rounds: 3, innerSteps: 10, deadline: 60, minNodes: 1)
    defer { h.cleanup() }
    let c1 = try h.coordinator()
    let node = try h.node("steady")
    #expect(h.waitForRound(1, "round_ended", seconds: 60) != nil)
    kill(c1.processIdentifier, SIGTERM)
    #expect(h.wait(c1, seconds: 30))
    let ended = h.waitForEvent("session_ended", log: "steady.log", seconds: 30)
    #expect(ended?["finished"] as? Bool == false, "the node was told the session ended, not the federation: \(String(describing: ended))")
    #expect(node.isRunning, "the node did not quit: \(h.read("steady.log"))")
    let c2 = try h.start(["coordinator", "--config", h.dir + "/coordinator.toml"], log: "coordinator.log", append: true)
    #expect(h.wait(c2, seconds: 120) && c2.terminationStatus == 0)
    #expect(h.wait(node, seconds: 20) && node.terminationStatus == 0, "the node stopped after the federation finished")
    let nlog = h.read("steady.log")
    print(h.read("coordinator.log"), nlog)
    let ev = h.events(log: "steady.log")
    #expect(ev.contains { $0["event"] as? String == "joined" && $0["again"] as? Bool == true }, "\(nlog)")
    #expect(ev.contains { $0["event"] as? String == "session_ended" && $0["finished"] as? Bool == true }, "\(nlog)")
    #expect(h.rows().map { $0[0] } == ["1", "2", "3"], "\(h.rows())")
  }

  /// A corrupt latest version no longer stops the coordinator for good: it is rebuilt from its parent and the
  /// kept patch (same hash); when that is gone too, the coordinator resumes from the newest intact version and
  /// the next version takes the next unused number (version numbers stay unique). A running coordinator never
  /// serves a blob that no longer hashes to its name.
  @Test func aCorruptLatestVersionIsRebuiltOrSkippedNeverFatal() throws {
    let h = try Harness(nodes: [("east", ["de"]), ("west", ["fr"])], rounds: 2, innerSteps: 5, quorum: 1.0, deadline: 60)
    defer { h.cleanup() }
    func federation(rounds: Int) throws {
      let f = try String(contentsOfFile: h.dir + "/federation.toml", encoding: .utf8)
      try f.replacing(#/count = \d+/#, with: "count = \(rounds)").write(toFile: h.dir + "/federation.toml", atomically: true, encoding: .utf8)
    }
    func runAll(log: String) throws -> Process {
      let c = try h.coordinator(log: log)
      let nodes = try h.nodes.map { try h.node($0, log: "\($0)-\(log)") }
      #expect(h.wait(c, seconds: 120))
      for n in nodes { _ = h.wait(n, seconds: 20) }
      return c
    }
    func corrupt(_ number: Int) throws {
      let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
      let path = store.blobPath(try store.version(number).hash)
      var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
      bytes[bytes.count / 2] ^= 0x5A
      try bytes.write(to: URL(fileURLWithPath: path))
    }
    #expect(try runAll(log: "c1.log").terminationStatus == 0)
    // Version 2's weights are corrupted; the patch from version 1 to 2 is still kept.
    try corrupt(2)
    try federation(rounds: 3)
    let c2 = try runAll(log: "c2.log")
    print(h.read("c2.log"))
    #expect(c2.terminationStatus == 0)
    #expect(h.read("c2.log").contains("version 2's weights were corrupt; rebuilt from version 1 and the kept patch"))
    // Version 3's weights are corrupted and no patch is kept: version 2 takes over and the next version is 4.
    try corrupt(3)
    try FileManager.default.removeItem(atPath: h.dir + "/coordinator/patches")
    try federation(rounds: 4)
    let c3 = try runAll(log: "c3.log")
    print(h.read("c3.log"))
    #expect(c3.terminationStatus == 0)
    #expect(h.read("c3.log").contains("version 3's weights were corrupt; resuming from version 2, the intact version before it; the next version is 4"))
    let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
    let versions = try store.versions()
    #expect(versions.map(\.number) == [0, 1, 2, 3, 4] && versions.last?.parent == 2, "\(versions.map { ($0.number, $0.parent) })")
    #expect(Set(versions.map(\.hash)).count == versions.count, "every number names its own model")
    let (status, report) = try h.run(["verify", "--config", h.dir + "/coordinator.toml"])
    let problems = report.split(separator: "\n").filter { $0.contains("✗") }
    #expect(status != 0 && problems.count == 1 && problems[0].contains(versions[3].hash.prefix(16)), "only version 3 is reported corrupt: \(report)")
    #expect(report.contains(".corrupt"), "the corrupt file set aside is noted: \(report)")
    #expect(try store.events().contains { $0.kind == "repair" })
  }
}
