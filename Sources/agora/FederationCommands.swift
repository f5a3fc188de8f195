import AgoraLinkEmulator
import AgoraCluster
import AgoraDashboard
import AgoraFineTune
import AgoraGeneration
import AgoraRounds
import AgoraServices
import ServiceLifecycle
import AgoraCoordinator
import AgoraDisclosure
import AgoraNode
import AgoraTransport
import AgoraTensor
import ArgumentParser
import Dispatch
import Foundation
import Logging

/// Calls `handler` once on SIGINT or SIGTERM (the default action is replaced).
func onTerminationSignal(_ handler: @escaping @Sendable () -> Void) -> [DispatchSourceSignal] {
  [SIGINT, SIGTERM].map { sig in
    signal(sig, SIG_IGN)
    let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
    s.setEventHandler(handler: handler)
    s.resume()
    return s
  }
}

struct CoordinatorCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "coordinator", abstract: "Run a federation's coordinator: admit enrolled nodes, run rounds, aggregate, version the model.")

  @Option(help: "coordinator.toml of the federation (e.g. Nodes/demo/coordinator.toml).")
  var config: String

  @Option(name: .customLong("set"), help: "A federation setting that replaces federation.toml's, as KEY=VALUE in TOML (e.g. rounds.secure_aggregation=true); repeatable. Every party must be given the same.")
  var overrides: [String] = []

  @Option(help: ArgumentHelp("Append the coordinator's events to FILE as JSON lines (listening, nodes, round_started, update_accepted, update_refused, round_ended), for scripts and supervisors.", valueName: "file"))
  var events: String?

  /// The vocabulary phase and the rounds (`CoordinatorRun`) and the dashboard (`DashboardRun`) as one service
  /// group: SIGTERM or SIGINT shuts both down gracefully, and the end of the rounds ends the dashboard.
  func run() async throws {
    setvbuf(stdout, nil, _IOLBF, 0)  // a line at a time, also into a log file
    let cfg: CoordinatorConfig
    do { cfg = try CoordinatorConfig(path: config, federationOverrides: overrides) } catch let e as ConfigError { throw CLIError(e.description) }
    // The round table goes to stdout; what happens inside a round to stderr (the demo keeps it in a log).
    let log: @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
    let process: CoordinatorProcess
    do {
      process = try CoordinatorProcess(config: cfg, events: events, log: log) { service in
        print("round | version | nodes | tokens    | bytes in   | node loss | mean bits/byte | seconds")
        service.onRound = { r in
          let mean = r.bitsPerByte.isEmpty ? Double.nan : r.bitsPerByte.map(\.1).reduce(0, +) / Double(r.bitsPerByte.count)
          print(String(format: "%5d | %7d | %2d/%-2d | %9llu | %10llu | %9.3f | %14.3f | %7.2f%@", r.round, r.version, r.accepted, r.selected, r.tokens,
                       r.bytesIn, r.meanLoss, mean, r.seconds,
                       (r.applied ? "" : "  (\(r.note))") + (r.late > 0 ? "  (+\(r.late) late)" : "")))
          fflush(stdout)
        }
      }
    } catch let e as ConfigError { throw CLIError(e.description) }
    try await process.run()
    let rounds = process.rounds
    if let service = rounds.first, let last = rounds.outcomes.last, !service.initialBitsPerByte.isEmpty {
      print("bits per byte per language, version \(service.initialVersion) → version \(last.version):")
      let after = Dictionary(uniqueKeysWithValues: last.bitsPerByte)
      for (lang, b) in service.initialBitsPerByte { print(String(format: "  %@  %.3f → %.3f", lang, b, after[lang] ?? .nan)) }
    }
  }
}

struct NodeCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "node", abstract: "Run a node: train on local data each round and send sealed updates to the coordinator.")

  @Option(help: "The node's TOML file (e.g. Nodes/demo/cuni.toml).")
  var config: String

  @Option(name: .customLong("set"), help: "A federation setting that replaces federation.toml's, as KEY=VALUE in TOML (e.g. rounds.secure_aggregation=true); repeatable. Every party must be given the same.")
  var overrides: [String] = []

  @Option(help: ArgumentHelp("Append the node's events to FILE as JSON lines (joined, refused, session_ended, round_abandoned, update_refused, evaluated).", valueName: "file"))
  var events: String?

  func run() async throws {
    setvbuf(stdout, nil, _IOLBF, 0)
    let cfg: NodeConfig
    do { cfg = try NodeConfig(path: config, federationOverrides: overrides) } catch let e as ConfigError { throw CLIError(e.description) }
    LoggingSystem.bootstrap { StreamLogHandler.standardOutput(label: $0) }
    // Under mpirun -np K the node spans K processes: rank 0 is the node, the others follow it (ClusterFollower).
    let cluster: Cluster?
    do { cluster = try Cluster.fromEnvironment() } catch { throw CLIError("\(error)") }
    if let cluster, !cluster.isLeader {
      do { try ClusterFollower(config: cfg, cluster: cluster).run() } catch {
        FileHandle.standardError.write(Data("\(cfg.name) rank \(cluster.rank): \(error); stopping every rank\n".utf8))
        cluster.abort()
      }
      return
    }
    // The vocabulary phase and the rounds as a service group: SIGTERM or SIGINT stops the node gracefully.
    let process: NodeProcess
    do { process = try NodeProcess(config: cfg, events: events, cluster: cluster, log: { print($0) }) } catch let e as ConfigError { throw CLIError(e.description) }
    do { try await process.run() } catch {
      // The other ranks wait in a collective for this one: a failure ends them all.
      if let cluster { FileHandle.standardError.write(Data("\(cfg.name): \(error); stopping every rank\n".utf8)); cluster.abort() }
      throw error
    }
  }
}

struct Demo: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run the demo consortium of Nodes/demo on this machine: a coordinator and four institutions as separate processes on 127.0.0.1.")

  @Option(help: "Directory of the demo federation's configuration.")
  var nodes: String = "Nodes/demo"

  @Option(help: "Work directory for keys, tokenizer, logs and versions.")
  var work: String = ".agora/demo"

  @Flag(help: "Run the rounds with secure aggregation: the coordinator learns only each round's sum (SPEC §7.2).")
  var secureAggregation = false

  @Option(name: .customLong("set"), help: "A federation setting for every process of the demo, as KEY=VALUE in TOML (e.g. rounds.dp_clip=1.0); repeatable.")
  var overrides: [String] = []

  @Option(help: ArgumentHelp("Run each process in the network namespace PREFIX-NAME (NAME: coordinator, or the node's file name), as scripts/wan builds them; give the coordinator's address with --set federation.endpoint=….", valueName: "prefix"))
  var namespaces: String?

  @Flag(help: "Instruction-tune the demo's final version (Nodes/demo-finetune): the institutions train LoRA adapters on their languages' chat data in a few rounds; answer bits/byte before and after per language, and three answers before and after. Runs the demo first if it has no version yet.")
  var finetune = false

  func run() throws {
    let fm = FileManager.default
    guard fm.fileExists(atPath: defaultDemoData + "/de/train.txt"), fm.fileExists(atPath: defaultDemoData + "-public/de/train.txt") else {
      throw CLIError("the demo corpus is missing: run scripts/setup")
    }
    if finetune { return try instructionTune() }
    try pretrain()
    try Self.tryTheModel(config: nodes + "/coordinator.toml")
    try Self.trainingContent(config: nodes + "/coordinator.toml")
  }

  /// Whether the final version's public summary of training content is complete for a release (it is when every
  /// institution declared its data and the coordinator its public corpus): one line, and what is missing.
  static func trainingContent(config: String) throws {
    var registry = RegistryOptions()
    registry.config = config
    let (store, cfg) = try registry.open()
    guard let n = try store.latestVersion()?.number else { return }
    let s = try TrainingContentSummary.of(n, in: store, provider: cfg.federation.provider)
    print("demo: version \(n)'s public summary of training content (AI Act): \(s.sourceLine); "
          + (s.releaseProblems.isEmpty ? "complete for a release (agora summary \(n), agora export \(n) --out DIR --release)"
                                       : "a release lacks \(s.releaseProblems.count) field(s), e.g. " + s.releaseProblems.prefix(2).joined(separator: "; ")
                                         + " (agora summary \(n) lists them)"))
  }

  /// The demo federation of `nodes`: a new registry, the vocabulary learned anew, the rounds.
  func pretrain() throws {
    let fm = FileManager.default
    let fedCfg = nodes + "/federation.toml"
    let nodeFiles = try DemoSetup.nodeConfigFiles(in: nodes)
    try DemoSetup.prepare(federation: fedCfg, nodeConfigs: nodeFiles.map { nodes + "/" + $0 })
    // Every demo is a new federation: the previous demo's registry and node state go first (keys stay).
    let coordData = try CoordinatorConfig(path: nodes + "/coordinator.toml").dataDir
    if fm.fileExists(atPath: coordData) {
      print("demo: a new federation; removing the previous demo's registry in \(URL(fileURLWithPath: coordData).standardizedFileURL.path)")
      try fm.removeItem(atPath: coordData)
    }
    // … and its vocabulary, when the federation learns it: the vocabulary phase runs again.
    let fed = try FederationConfig(path: fedCfg, overrides: overrides)
    if fed.vocabulary != nil && fm.fileExists(atPath: fed.tokenizer) {
      print("demo: the vocabulary is learned anew from the institutions' count tables (removing \(URL(fileURLWithPath: fed.tokenizer).standardizedFileURL.path))")
      try fm.removeItem(atPath: fed.tokenizer)
    }
    // Under secure aggregation the coordinator cannot read each node's second moments: the mean is by tokens.
    let sets = (secureAggregation ? ["--set", "rounds.secure_aggregation=true", "--set", "rounds.moment_weighting=0"] : []) + overrides.flatMap { ["--set", $0] }
    if secureAggregation { print("demo: secure aggregation: the coordinator sees each round's sum, never an institution's update (so it averages by tokens, not by the nodes' second moments)") }
    try federate(nodes: nodes, files: nodeFiles, logs: work + "/logs", sets: sets)
  }

  /// Runs the coordinator of `nodes` and its nodes (`files`) as processes until the coordinator ends.
  func federate(nodes: String, files nodeFiles: [String], logs: String, sets: [String]) throws {
    let fm = FileManager.default
    try fm.createDirectory(atPath: logs, withIntermediateDirectories: true)
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var children: [Process] = []
    let lock = NSLock()
    let signals = onTerminationSignal {
      lock.lock(); for c in children where c.isRunning { c.terminate() }; lock.unlock()
    }
    defer { _ = signals }
    if namespaces != nil { _ = try iproute() }  // before anything starts
    func spawn(_ name: String, _ args: [String], log: String?, errorLog: String? = nil) throws -> Process {
      let p = Process()
      try p.setCommand(exe, args, inNamespace: namespaces.map { $0 + "-" + name })
      var env = ProcessInfo.processInfo.environment
      env["OPENBLAS_NUM_THREADS"] = "1"
      p.environment = env
      if let log {
        fm.createFile(atPath: log, contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = h
        p.standardError = h
      }
      if let errorLog {
        fm.createFile(atPath: errorLog, contents: nil)
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorLog))
      }
      try p.run()
      lock.lock(); children.append(p); lock.unlock()
      return p
    }
    if let prefix = namespaces {
      print("demo: coordinator and \(nodeFiles.count) nodes in network namespaces \(prefix)-* (logs in \(logs))")
    } else {
      print("demo: coordinator and \(nodeFiles.count) nodes on 127.0.0.1 (logs in \(logs))")
    }
    if let d = try CoordinatorConfig(path: nodes + "/coordinator.toml").dashboard {
      print("demo: dashboard on http://\(d.host):\(d.port)/ while the demo runs\(namespaces.map { " (inside network namespace \($0)-coordinator)" } ?? "")")
    }
    fflush(stdout)
    let coordinator = try spawn("coordinator", ["coordinator", "--config", nodes + "/coordinator.toml"] + sets, log: nil, errorLog: logs + "/coordinator.log")
    Thread.sleep(forTimeInterval: 0.5)
    for f in nodeFiles {
      let name = (f as NSString).deletingPathExtension
      _ = try spawn(name, ["node", "--config", nodes + "/" + f] + sets, log: logs + "/" + name + ".log")
    }
    coordinator.waitUntilExit()
    // Nodes leave when the coordinator says so; anything still running after 10 s is stopped.
    let deadline = Date(timeIntervalSinceNow: 10)
    while Date() < deadline, children.contains(where: \.isRunning) { Thread.sleep(forTimeInterval: 0.1) }
    lock.lock(); for c in children where c.isRunning { c.terminate() }; lock.unlock()
    guard coordinator.terminationStatus == 0 else { throw CLIError("the coordinator failed (status \(coordinator.terminationStatus))") }
  }

  /// `--finetune`: the demo's final version (made first if there is none) exported as the base of
  /// Nodes/demo-finetune, whose institutions train LoRA adapters on their chat data; then three held-out
  /// questions answered by version 0 (the base) and by the last version.
  func instructionTune() throws {
    let fm = FileManager.default
    guard fm.fileExists(atPath: defaultDemoChatData + "/de/train.jsonl") else { throw CLIError("the demo's chat data is missing: run scripts/setup") }
    let tuning = "Nodes/demo-finetune"
    var registry = RegistryOptions()
    registry.config = nodes + "/coordinator.toml"
    let demoData = try CoordinatorConfig(path: nodes + "/coordinator.toml").dataDir
    let trained = fm.fileExists(atPath: demoData + "/registry.sqlite") ? try registry.open().0.latestVersion()?.number ?? 0 : 0
    if trained == 0 {
      print("demo --finetune: the demo has no trained version yet; running it first")
      try pretrain()
    }
    let (store, cfg) = try registry.open()
    guard let n = try store.latestVersion()?.number else { throw CLIError("the demo's registry holds no version") }
    guard let base = try FederationConfig(path: tuning + "/federation.toml").modelInit else { throw CLIError("\(tuning)/federation.toml names no base (model.init)") }
    try? fm.removeItem(atPath: base)
    _ = try VersionExport.export(n, from: store, signKey: try registry.signKey(cfg), to: base)
    let fed = try FederationConfig(path: tuning + "/federation.toml", overrides: overrides)
    print("demo --finetune: version \(n) of the demo is the base (exported to \(URL(fileURLWithPath: base).standardizedFileURL.path))")
    let coordData = try CoordinatorConfig(path: tuning + "/coordinator.toml").dataDir
    if fm.fileExists(atPath: coordData) { try fm.removeItem(atPath: coordData) }
    let files = try DemoSetup.nodeConfigFiles(in: tuning)
    try DemoSetup.prepare(federation: tuning + "/federation.toml", nodeConfigs: files.map { tuning + "/" + $0 })
    print("demo --finetune: \(fed.fineTune?.summary ?? "?"), \(fed.rounds) rounds of \(fed.innerSteps) steps; answer-token bits/byte on held-out commands' questions")
    try federate(nodes: tuning, files: files, logs: work + "/finetune/logs", sets: overrides.flatMap { ["--set", $0] })
    try Self.answer(config: tuning + "/coordinator.toml", chat: defaultDemoChatData)
    try Self.trainingContent(config: tuning + "/coordinator.toml")
  }

  /// Three held-out questions (the first of de, fr and el's valid.jsonl) answered greedily by version 0 and by
  /// the latest version of the fine-tuning federation of `config`, with the reference answer.
  static func answer(config: String, chat: String) throws {
    guard let template = try GenerateCommand.versionTemplate(config: config, version: nil) else { throw CLIError("\(config): not a fine-tuning federation") }
    let (before, _) = try GenerateCommand.versionGenerator(config: config, version: 0, slots: 1, endOfTurn: template.endOfTurn)
    let (after, n) = try GenerateCommand.versionGenerator(config: config, version: nil, slots: 1, endOfTurn: template.endOfTurn)
    var s = GenerationSettings()
    s.maxNewTokens = 40
    s.sampling.temperature = 0
    print("demo --finetune: three held-out questions, answered by version 0 (the base) and version \(n) (agora generate --config \(config) --version N --chat --temperature 0):")
    for lang in ["de", "fr", "el"] {
      guard let line = (try? String(contentsOfFile: chat + "/" + lang + "/valid.jsonl", encoding: .utf8))?.split(separator: "\n").first,
            let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let msgs = o["messages"] as? [[String: String]],
            let q = msgs.first(where: { $0["role"] == "user" })?["content"], let ref = msgs.first(where: { $0["role"] == "assistant" })?["content"] else { continue }
      func reply(_ g: Generator) throws -> String {
        let ids = try g.tokenizer.render([ChatMessage(.user, q)], template: template, addGenerationPrompt: true).ids
        return try g.generate([ids], s).0[0].text.replacingOccurrences(of: "\n", with: " ⏎ ")
      }
      print("  [\(lang)] \(q)")
      print("       before: \(try reply(before))")
      print("       after:  \(try reply(after))")
      print("       (the manual: \(ref))")
    }
  }

  /// What the final version says: three prompts in the demo's languages, sampled with seed 1 (the same as
  /// `agora generate --config Nodes/demo/coordinator.toml --prompt TEXT --seed 1 --max-new-tokens 32`).
  static func tryTheModel(config: String) throws {
    let prompts = ["Die Datei wird", "Le fichier est", "Il comando"]
    let (gen, n) = try GenerateCommand.versionGenerator(config: config, version: nil, slots: 1)
    var s = GenerationSettings()
    s.maxNewTokens = 32
    s.sampling.seed = 1
    print("demo: version \(n) continues three prompts (agora generate --config \(config) --prompt TEXT --seed 1 --max-new-tokens 32):")
    for (i, p) in prompts.enumerated() {
      let (done, _) = try gen.generate(texts: [p], s)
      let text = done[0].text.replacingOccurrences(of: "\n", with: " ⏎ ")
      print("  [\(i + 1)] \(p)\(text)")
    }
  }
}
