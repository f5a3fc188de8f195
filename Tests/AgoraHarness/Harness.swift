import AgoraCrypto
import AgoraData
@testable import AgoraRounds
import AgoraModel
@testable import AgoraTransport
import AgoraTestSupport
import AgoraWire
import Foundation

/// A small federation in a temporary directory: real keys, real demo text split over the nodes, TOML files
/// like Nodes/demo's, and a free port on 127.0.0.1.
public struct Harness {
  public let dir: String
  public let nodes: [String]
  public let port: Int

  public init(nodes: [(String, [String])], rounds: Int, innerSteps: Int, quorum: Double = 0.5, deadline: Double = 60, minNodes: Int? = nil,
       bytes: Int = 60_000, extra: String = "", donors: [String] = [], compression: String = "int8", warmStart: Int = 0,
       architecture: String = "gpt2", pilot: String? = nil) throws {
    dir = NSTemporaryDirectory() + "agora-federation-\(UUID().uuidString)"
    let fm = FileManager.default
    let demo = repoRoot + "/.agora/data/demo"
    var langs: Set<String> = []
    for (_, ls) in nodes { langs.formUnion(ls) }
    try demoSlice(languages: langs.sorted(), bytes: bytes, into: dir + "/data")
    var bpe = BPETrainer()
    for l in langs.sorted() { bpe.addLanguage(l, texts: [try String(contentsOfFile: "\(dir)/data/\(l)/train.txt", encoding: .utf8)]) }
    if pilot == nil { try bpe.train(vocabSize: 512).save(to: dir + "/tokenizer.json") }
    // A pilot checkpoint (model.init) brings its own shape and tokenizer.
    let model = pilot.map { "init = \"\($0)\"" } ?? "preset = \"tiny\"\narchitecture = \"\(architecture)\"\ntokenizer = \"tokenizer.json\""
    _ = try Identity.generate(in: dir + "/keys/coordinator", name: "Test coordinator", institution: "T", contact: "", coordinator: true)
    try fm.createDirectory(atPath: dir + "/keys/enrolled", withIntermediateDirectories: true)
    port = freeLocalPort()
    try """
    [federation]
    id = "test-federation"
    endpoint = "tcp://127.0.0.1:\(port)"
    coordinator_card = "keys/coordinator/card.toml"
    [model]
    \(model)
    seed = 3
    eval_data = ["data"]\(warmStart > 0 ? "\nwarm_start_steps = \(warmStart)" : "")
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
    // A warm start trains version 0 on the public corpus (Italian text the nodes do not hold; `extra` names it).
    if warmStart > 0 { try Harness.publicCorpus(in: dir) }
    for name in donors {
      let id = try Identity.generate(in: dir + "/keys/" + name, name: name, institution: name, contact: "", coordinator: false)
      try id.card.toml().write(toFile: dir + "/keys/enrolled/\(name).toml", atomically: true, encoding: .utf8)
      try "[node]\nname = \"\(name)\"\nfederation = \"federation.toml\"\nidentity = \"keys/\(name)\"\ndonor = true\nthreads = 1\nwork = \"work/\(name)\"\n"
        .write(toFile: dir + "/\(name).toml", atomically: true, encoding: .utf8)
      // The public corpus donors train on: Italian text no institution holds.
      try Harness.publicCorpus(in: dir)
    }
    self.nodes = names
  }

  /// public/it/train.txt: 30 KB of the demo's Italian.
  public static func publicCorpus(in dir: String) throws {
    try FileManager.default.createDirectory(atPath: dir + "/public/it", withIntermediateDirectories: true)
    let d = try Data(contentsOf: URL(fileURLWithPath: repoRoot + "/.agora/data/demo/it/train.txt")).prefix(30_000)
    try d.prefix(through: d.lastIndex(of: 0x0A)!).write(to: URL(fileURLWithPath: dir + "/public/it/train.txt"))
  }

  public func cleanup() { try? FileManager.default.removeItem(atPath: dir) }

  /// Starts `agora ARGS`; output goes to `log` under the harness directory.
  /// `namespace`: run it inside that network namespace (`ip netns exec`, which replaces itself with agora).
  /// `directory`: the working directory (the harness's own when nil is not wanted; by default the test's).
  public func start(_ args: [String], log: String, env extra: [String: String] = [:], append: Bool = false, namespace: String? = nil,
                    directory: String? = nil) throws -> Process {
    guard FileManager.default.isExecutableFile(atPath: agoraBinary) else {
      throw DataError.missingSource("\(agoraBinary) is missing: build it first (scripts/setup does)")
    }
    let p = Process()
    if let namespace {
      p.executableURL = URL(fileURLWithPath: WideAreaLinks.ip ?? "/usr/sbin/ip")
      p.arguments = ["netns", "exec", namespace, agoraBinary] + args
    } else {
      p.executableURL = URL(fileURLWithPath: agoraBinary)
      p.arguments = args
    }
    if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
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

  /// Starts the coordinator with its events in `<log>.events` (JSON lines) and returns once it is listening
  /// (its `listening` event; at most `ready` seconds, a warm start included) — or once it has exited, for the
  /// tests of a coordinator that refuses to start. Nodes started after it find it bound.
  public func coordinator(env: [String: String] = [:], log: String = "coordinator.log", namespace: String? = nil, ready: Double = 120) throws -> Process {
    let p = try start(["coordinator", "--config", dir + "/coordinator.toml", "--events", dir + "/" + eventFile(log)], log: log, env: env, namespace: namespace)
    _ = waitForEvent("listening", log: log, seconds: ready, while: { p.isRunning })
    return p
  }

  /// The event file of the coordinator whose log is `log`.
  public func eventFile(_ log: String) -> String { (log.hasSuffix(".log") ? String(log.dropLast(4)) : log) + ".events" }

  /// The coordinator's events so far (its `--events` file, one JSON object per line).
  public func events(log: String = "coordinator.log") -> [[String: Any]] {
    read(eventFile(log)).split(separator: "\n").compactMap {
      try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
  }

  /// Waits until the coordinator of `log` reports event `name` for which `match` holds (round numbers as Int):
  /// the event, or nil after `seconds` or once `while` turns false. Polls the event file every 20 ms.
  @discardableResult
  public func waitForEvent(_ name: String, log: String = "coordinator.log", seconds: Double = 120, while alive: () -> Bool = { true },
                           where match: ([String: Any]) -> Bool = { _ in true }) -> [String: Any]? {
    var found: [String: Any]? = nil
    waitUntil(seconds) {
      found = events(log: log).first(where: { $0["event"] as? String == name && match($0) })
      return found != nil || !alive()
    }
    return found
  }

  /// Waits for round `r`'s event `name` (`round_started`, `round_ended`, `update_accepted`, …).
  @discardableResult
  public func waitForRound(_ r: Int, _ name: String = "round_started", log: String = "coordinator.log", seconds: Double = 120) -> [String: Any]? {
    waitForEvent(name, log: log, seconds: seconds) { ($0["round"] as? Int) == r }
  }

  /// A node that speaks the protocol by hand (for tests of what a well-behaved node never sends): its
  /// identity, the coordinator's card, and an endpoint that has sent JOIN.
  public func handClient(_ name: String) throws -> (Identity, EnrolmentCard, Endpoint) {
    let me = try Identity.load(from: dir + "/keys/" + name)
    let card = try EnrolmentCard.load(dir + "/keys/coordinator/card.toml")
    let ep = try Endpoint.client(connect: "tcp://127.0.0.1:\(port)", serverKey: card.curvePublic,
                                 keys: CurveKeys(publicKey: me.card.curvePublic, secretKey: me.curveSecret))
    ep.send(.join(name: name, software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: try terms()))
    return (me, card, ep)
  }

  /// The federation's terms (what a node's JOIN must state), optionally changed.
  public func terms(_ change: (inout TrainingTerms) -> Void = { _ in }) throws -> TrainingTerms {
    let fed = try FederationConfig(path: dir + "/federation.toml")
    let tokenizer = try Tokenizer(contentsOf: fed.tokenizer)
    var mc = try GPTConfig.preset(fed.preset)
    mc.vocabSize = tokenizer.vocabSize
    var t = try fed.terms(tokenizer: tokenizer, model: mc)
    change(&t)
    return t
  }

  /// Runs `agora ARGS` to the end; returns (status, output).
  public func run(_ args: [String]) throws -> (Int32, String) {
    let name = "cmd-\(UUID().uuidString).log"
    let p = try start(args, log: name)
    p.waitUntilExit()
    return (p.terminationStatus, read(name))
  }
  /// A node process; its events go to the event file of its log (`east.log` → `east.events`: `events(log:)`,
  /// `waitForEvent(_:log:)` read it as they read the coordinator's).
  public func node(_ name: String, log: String? = nil, env: [String: String] = [:], namespace: String? = nil) throws -> Process {
    let l = log ?? "\(name).log"
    return try start(["node", "--config", "\(dir)/\(name).toml", "--events", dir + "/" + eventFile(l)], log: l, env: env, namespace: namespace)
  }
  public func read(_ log: String) -> String { (try? String(contentsOfFile: dir + "/" + log, encoding: .utf8)) ?? "" }

  /// Waits (bounded) for a process to exit; kills it when the time is up.
  public func wait(_ p: Process, seconds: Double) -> Bool {
    waitUntil(seconds, every: 0.05) { !p.isRunning }
    if p.isRunning { p.terminate(); return false }
    return true
  }

  /// (round, mean bits/byte) rows of the coordinator's round table.
  public func table() -> [(Int, Double)] {
    read("coordinator.log").split(separator: "\n").compactMap { line in
      let f = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
      guard f.count >= 8, let r = Int(f[0]), let bpb = Double(f[6]) else { return nil }
      return (r, bpb)
    }
  }
}

/// A node that speaks the protocol by hand, for behaviours a well-behaved node never shows.
public struct HandNode {
  public let id: Identity
  public let coordinator: EnrolmentCard
  public let ep: Endpoint
  /// Whether the federation averages by second moments: then every update carries them (here all 1).
  public var moments: Bool

  public init(_ h: Harness, _ name: String) throws {
    (id, coordinator, ep) = try h.handClient(name)
    moments = try FederationConfig(path: h.dir + "/federation.toml").momentWeighting > 0
  }

  /// The next ROUND (heartbeats meanwhile), or nil after `seconds`.
  public func nextRound(seconds: Double = 60) -> (round: UInt64, base: [UInt8], bytes: Int, version: UInt64, deadline: Date, patch: [UInt8])? {
    let end = Date(timeIntervalSinceNow: seconds)
    while Date() < end {
      guard let m = ep.receive(timeout: 0.5) else { ep.send(.heartbeat); continue }
      if case .success(.round(let r, let base, _, _, _, let dl, let bytes, _, let patch, _, let v, _)) = m.message {
        return (r, base, Int(bytes), v, Date(timeIntervalSince1970: Double(dl) / 1000), patch)
      }
    }
    return nil
  }

  /// The last outer step (the round's version patch, fetched and decoded): what an honest update points along.
  public func lastStep(_ patch: [UInt8], values: Int) throws -> [Float] {
    var bytes: [UInt8] = []
    _ = try BlobFetcher(endpoint: ep).fetch(hash: patch) { bytes += $0 }
    var out = [Float](repeating: 0, count: values)
    try bytes.withUnsafeBytes { b in try out.withUnsafeMutableBufferPointer { try DeltaCodec.decode(b, into: $0.baseAddress!, count: values, mode: .store) } }
    return out
  }

  /// Seals `delta` as this node's update for `round` and streams it under `transfer`; "accepted" or
  /// "rejected CODE: TEXT".
  public func send(_ delta: [Float], round r: UInt64, base: [UInt8], transfer: UInt64, format: DeltaFormat = .int8, steps: UInt32 = 1, tokens: UInt64 = 512,
            chunk: Int = 1 << 20, stopAfter: Int? = nil) throws -> String {
    let payload = delta.withUnsafeBufferPointer { DeltaCodec.encode($0, format: format) }
      + (moments ? [Float](repeating: 1, count: delta.count).withUnsafeBufferPointer { BlockMoments.trailer($0) } : [])
    let sealer = try EnvelopeSealer(context: .init(federation: "test-federation", round: r, baseHash: base, nodeID: id.card.nodeID),
                                    payloadLength: UInt64(payload.count), chunkSize: chunk, recipient: coordinator.aggregationPublic!,
                                    signingSecretKey: id.signSecret)
    var sender = UploadSender(endpoint: ep, transfer: transfer, round: r)
    sender.ackTimeout = 1
    sender.maxRetries = 60
    do {
      _ = try sender.send(sealer: sealer, tokens: tokens, steps: steps, loss: 3) { i in
        if let s = stopAfter, i >= s { throw TransferError.timeout("stopped by the test") }
        return Array(payload[(i * chunk)..<min(payload.count, (i + 1) * chunk)])
      }
      return "accepted"
    } catch let TransferError.rejected(code, text) {
      return "rejected \(code): \(text)"
    }
  }
}

extension GPTConfig {
  public func withVocab(_ v: Int) -> GPTConfig { var c = self; c.vocabSize = v; return c }
}

extension Harness {
  /// The coordinator, then a real node and a hand-driven one (the usual cast of these tests).
  public func coordinatorWith(node: String, hand: String) throws -> (coordinator: Process, node: Process, hand: HandNode) {
    let c = try coordinator()
    return (c, try self.node(node), try HandNode(self, hand))
  }

  /// Round-table rows: "round | version | nodes | …" split into trimmed fields.
  public func rows() -> [[String]] {
    read("coordinator.log").split(separator: "\n").filter { $0.hasPrefix("    ") && $0.contains("|") }
      .map { $0.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) } }
  }
}
