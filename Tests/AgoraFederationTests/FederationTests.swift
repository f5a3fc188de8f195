import AgoraCrypto
import AgoraData
import AgoraModel
import AgoraTransport
import AgoraWire
import Foundation
import Testing
@testable import AgoraFederation

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
let agoraBinary = repoRoot + "/.build/release/agora"

/// A small federation in a temporary directory: real keys, real demo text split over the nodes, TOML files
/// like Nodes/demo's, and a free port on 127.0.0.1.
struct Harness {
  let dir: String
  let nodes: [String]
  let port: Int

  init(nodes: [(String, [String])], rounds: Int, innerSteps: Int, quorum: Double = 0.5, deadline: Double = 60, minNodes: Int? = nil,
       bytes: Int = 60_000, extra: String = "", donors: [String] = [], compression: String = "int8") throws {
    dir = NSTemporaryDirectory() + "agora-federation-\(UUID().uuidString)"
    let fm = FileManager.default
    let demo = repoRoot + "/.agora/data/demo"
    guard fm.fileExists(atPath: demo + "/de/train.txt") else { throw DataError.missingSource("run scripts/setup first: the demo corpus is missing") }
    var langs: Set<String> = []
    for (_, ls) in nodes { langs.formUnion(ls) }
    var bpe = BPETrainer()
    for l in langs.sorted() {
      try fm.createDirectory(atPath: "\(dir)/data/\(l)", withIntermediateDirectories: true)
      for (split, n) in [("train", bytes), ("valid", bytes / 4)] {
        let d = try Data(contentsOf: URL(fileURLWithPath: "\(demo)/\(l)/\(split).txt"))
        let cut = d.prefix(n)
        let text = cut.prefix(through: cut.lastIndex(of: 0x0A) ?? cut.count - 1)
        try text.write(to: URL(fileURLWithPath: "\(dir)/data/\(l)/\(split).txt"))
        if split == "train" { bpe.addLanguage(l, texts: [String(decoding: text, as: UTF8.self)]) }
      }
    }
    try bpe.train(vocabSize: 512).save(to: dir + "/tokenizer.json")
    _ = try Identity.generate(in: dir + "/keys/coordinator", name: "Test coordinator", institution: "T", contact: "", coordinator: true)
    try fm.createDirectory(atPath: dir + "/keys/enrolled", withIntermediateDirectories: true)
    // A free port: bind to 0, read it, release it.
    let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, len); return getsockname(probe, $0, &len) } }
    port = Int(UInt16(bigEndian: addr.sin_port))
    close(probe)
    try """
    [federation]
    id = "test-federation"
    endpoint = "tcp://127.0.0.1:\(port)"
    coordinator_card = "keys/coordinator/card.toml"
    [model]
    preset = "tiny"
    tokenizer = "tokenizer.json"
    seed = 3
    eval_data = ["data"]
    [rounds]
    count = \(rounds)
    inner_steps = \(innerSteps)
    batch = 8
    learning_rate = 5e-3
    deadline_seconds = \(deadline)
    quorum = \(quorum)
    min_nodes = \(minNodes ?? nodes.count)
    outer_optimizer = "diloco"
    compression = "\(compression)"
    \(extra)
    """.write(toFile: dir + "/federation.toml", atomically: true, encoding: .utf8)
    try """
    [coordinator]
    federation = "federation.toml"
    identity = "keys/coordinator"
    enrolled = "keys/enrolled"
    data = "coordinator"
    """.write(toFile: dir + "/coordinator.toml", atomically: true, encoding: .utf8)
    var names: [String] = []
    for (name, ls) in nodes {
      let id = try Identity.generate(in: dir + "/keys/" + name, name: name, institution: name, contact: "", coordinator: false)
      try id.card.toml().write(toFile: dir + "/keys/enrolled/\(name).toml", atomically: true, encoding: .utf8)
      try """
      [node]
      name = "\(name)"
      federation = "federation.toml"
      identity = "keys/\(name)"
      data = [\(ls.map { "\"data/\($0)\"" }.joined(separator: ", "))]
      threads = 1
      work = "work/\(name)"
      """.write(toFile: dir + "/\(name).toml", atomically: true, encoding: .utf8)
      names.append(name)
    }
    for name in donors {
      let id = try Identity.generate(in: dir + "/keys/" + name, name: name, institution: name, contact: "", coordinator: false)
      try id.card.toml().write(toFile: dir + "/keys/enrolled/\(name).toml", atomically: true, encoding: .utf8)
      try "[node]\nname = \"\(name)\"\nfederation = \"federation.toml\"\nidentity = \"keys/\(name)\"\ndonor = true\nthreads = 1\nwork = \"work/\(name)\"\n"
        .write(toFile: dir + "/\(name).toml", atomically: true, encoding: .utf8)
      // The public corpus donors train on: Italian text no institution holds.
      try fm.createDirectory(atPath: dir + "/public/it", withIntermediateDirectories: true)
      let d = try Data(contentsOf: URL(fileURLWithPath: demo + "/it/train.txt")).prefix(30_000)
      try d.prefix(through: d.lastIndex(of: 0x0A)!).write(to: URL(fileURLWithPath: dir + "/public/it/train.txt"))
    }
    self.nodes = names
  }

  func cleanup() { try? FileManager.default.removeItem(atPath: dir) }

  /// Starts `agora ARGS`; output goes to `log` under the harness directory.
  func start(_ args: [String], log: String, env extra: [String: String] = [:], append: Bool = false) throws -> Process {
    guard FileManager.default.isExecutableFile(atPath: agoraBinary) else {
      throw DataError.missingSource("\(agoraBinary) is missing: build it first (scripts/setup does)")
    }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: agoraBinary)
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.merge(extra) { _, b in b }
    p.environment = env
    if !append || !FileManager.default.fileExists(atPath: dir + "/" + log) { FileManager.default.createFile(atPath: dir + "/" + log, contents: nil) }
    let h = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/" + log))
    h.seekToEndOfFile()
    p.standardOutput = h
    p.standardError = h
    try p.run()
    return p
  }

  func coordinator(env: [String: String] = [:], log: String = "coordinator.log") throws -> Process {
    try start(["coordinator", "--config", dir + "/coordinator.toml"], log: log, env: env)
  }

  /// A node that speaks the protocol by hand (for tests of what a well-behaved node never sends): its
  /// identity, the coordinator's card, and an endpoint that has sent JOIN.
  func handClient(_ name: String) throws -> (Identity, EnrolmentCard, Endpoint) {
    let me = try Identity.load(from: dir + "/keys/" + name)
    let card = try EnrolmentCard.load(dir + "/keys/coordinator/card.toml")
    let ep = try Endpoint.client(connect: "tcp://127.0.0.1:\(port)", serverKey: card.curvePublic,
                                 keys: CurveKeys(publicKey: me.card.curvePublic, secretKey: me.curveSecret))
    ep.send(.join(name: name, software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: try terms()))
    return (me, card, ep)
  }

  /// The federation's terms (what a node's JOIN must state), optionally changed.
  func terms(_ change: (inout TrainingTerms) -> Void = { _ in }) throws -> TrainingTerms {
    let fed = try FederationConfig(path: dir + "/federation.toml")
    let tokenizer = try Tokenizer(contentsOf: fed.tokenizer)
    var mc = try GPTConfig.preset(fed.preset)
    mc.vocabSize = tokenizer.vocabSize
    var t = try fed.terms(tokenizer: tokenizer, model: mc)
    change(&t)
    return t
  }

  /// Runs `agora ARGS` to the end; returns (status, output).
  func run(_ args: [String]) throws -> (Int32, String) {
    let name = "cmd-\(UUID().uuidString).log"
    let p = try start(args, log: name)
    p.waitUntilExit()
    return (p.terminationStatus, read(name))
  }
  func node(_ name: String, log: String? = nil, env: [String: String] = [:]) throws -> Process {
    try start(["node", "--config", "\(dir)/\(name).toml"], log: log ?? "\(name).log", env: env)
  }
  func read(_ log: String) -> String { (try? String(contentsOfFile: dir + "/" + log, encoding: .utf8)) ?? "" }

  /// Waits (bounded) for a process to exit; kills it when the time is up.
  func wait(_ p: Process, seconds: Double) -> Bool {
    let end = Date(timeIntervalSinceNow: seconds)
    while p.isRunning && Date() < end { Thread.sleep(forTimeInterval: 0.1) }
    if p.isRunning { p.terminate(); return false }
    return true
  }

  /// (round, mean bits/byte) rows of the coordinator's round table.
  func table() -> [(Int, Double)] {
    read("coordinator.log").split(separator: "\n").compactMap { line in
      let f = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
      guard f.count >= 8, let r = Int(f[0]), let bpb = Double(f[6]) else { return nil }
      return (r, bpb)
    }
  }
}

@Suite(.serialized) struct FederationTests {
  /// With fp32 updates the coordinator also stages each update in θ's memory and reads θ back
  /// from its version blob (checksum-checked) before each step: the patches nodes apply must still reach
  /// exactly the versions announced.
  @Test(arguments: ["int8", "fp32"])
  func multiProcessFederationLowersValidationLoss(compression: String) throws {
    let h = try Harness(nodes: [("north", ["de", "sv"]), ("south", ["es", "it"])], rounds: 4, innerSteps: 40, compression: compression)
    defer { h.cleanup() }
    let c = try h.coordinator()
    Thread.sleep(forTimeInterval: 0.3)
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
    }
    // From round 2 on, nodes holding the previous version take the int8 patch instead of the whole model.
    for name in h.nodes {
      let lines = h.read("\(name).log").split(separator: "\n").filter { $0.contains(": round ") }
      #expect(lines.count == 4 && lines.dropFirst().allSatisfy { $0.contains("(patch)") }, "\(name): \(lines)")
    }
  }

  @Test func roundCompletesOnQuorumWhenANodeIsKilledAndTheNodeCatchesUp() throws {
    let h = try Harness(nodes: [("a", ["de"]), ("b", ["fr"]), ("c", ["pl"])], rounds: 4, innerSteps: 300, quorum: 0.5, deadline: 60, minNodes: 3)
    defer { h.cleanup() }
    let coord = try h.coordinator()
    Thread.sleep(forTimeInterval: 0.3)
    var procs = try h.nodes.map { try h.node($0) }
    // Once round 1 is in the table, round 2 has been announced: kill node c while it trains.
    let end = Date(timeIntervalSinceNow: 120)
    while Date() < end && h.table().isEmpty { Thread.sleep(forTimeInterval: 0.1) }
    Thread.sleep(forTimeInterval: 1)
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
    #expect(h.read("c-restarted.log").contains("round 3") || h.read("c-restarted.log").contains("round 4"),
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
    Thread.sleep(forTimeInterval: 0.3)
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
    Thread.sleep(forTimeInterval: 0.3)
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
        while Date().timeIntervalSince1970 * 1000 < Double(deadlineMs) + 800 { Thread.sleep(forTimeInterval: 0.3); ep.send(.heartbeat) }
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
    Thread.sleep(forTimeInterval: 0.3)
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
      while Date().timeIntervalSince1970 * 1000 < Double(deadlineMs) - 1000 { Thread.sleep(forTimeInterval: 0.3); ep.send(.heartbeat) }
      var sender = UploadSender(endpoint: ep, transfer: r, round: r)
      sender.ackTimeout = 2
      do {
        _ = try sender.send(sealer: sealer, tokens: 4096, steps: 10, loss: 5) { i in
          if i == half {
            // Half of it is staged: wait (heartbeats keep the session) until round 1 has closed and stepped.
            while Date().timeIntervalSince1970 * 1000 < Double(deadlineMs) + 2500 { Thread.sleep(forTimeInterval: 0.3); ep.send(.heartbeat) }
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
    Thread.sleep(forTimeInterval: 0.3)
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
