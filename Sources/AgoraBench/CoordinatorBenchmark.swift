import AgoraCoordinator
import AgoraCrypto
import AgoraImport
import AgoraLinkEmulator
import AgoraData
import AgoraRounds
import AgoraModel
import AgoraRegistry
import Foundation

public struct CoordinatorBenchmark {

  public var nodes: Int = 4
  public var preset: String = "bench-14m"
  public var rounds: Int = 3
  /// The updates' format: fp32, int8 or int4 (the federation's `rounds.compression`).
  public var format: DeltaFormat = .int8
  /// Nodes per process (threads of one `agora transport instant-node`); 1 = a process each.
  public var nodesPerProcess = 1
  /// Nodes make their updates from a seed while sending them (`SeededPayload`), holding none of it.
  public var streamed = false
  /// Serve the dashboard and time its answers while the rounds run.
  public var probeDashboard = false
  /// After the rounds: the last version out with `agora export` (sharded safetensors) and read back with the
  /// pilot-model import, compared bit for bit with the registry's version.
  public var exportLast = false
  public var keep = false
  public var secureAggregation = false
  public var bits: Int? = nil
  public var nodeBits: Int? = nil

  /// The ring the federation is given.
  var ring: SecureAggregationRing { bits.map { .fixed($0) } ?? .perNode(nodeBits ?? SecureAggregationRing.defaultNodeBits) }

  public var encodeEachRound = false
  public var momentWeighting: Double = 0
  public var concurrentUploads: Int = 1
  public var namespaces: String? = nil
  public var address: String = "127.0.0.1"

  public init() {}

  public func run() throws {
    let dir = NSTemporaryDirectory() + "agora-benchcoord-\(UUID().uuidString)"
    defer { if keep { print("kept \(dir)") } else { try? FileManager.default.removeItem(atPath: dir) } }
    let fm = FileManager.default
    let mc = try GPTConfig.preset(preset)
    // A tokenizer only fixes the vocabulary size here.
    var bpe = BPETrainer()
    let text = (0..<4000).map { "w\($0 % 997) x\($0 % 61)y\($0 % 13) " }.joined()
    bpe.addLanguage("synthetic", texts: [text])
    var tok = try bpe.train(vocabSize: 1000)
    if tok.vocabSize != mc.vocabSize {
      // Pad the vocabulary with merges of byte pairs, so the model has the preset's shape.
      var merges = tok.merges
      var a: Int32 = 0, b: Int32 = 0
      while merges.count + 257 < mc.vocabSize {
        b += 1; if b == 256 { a += 1; b = 0 }
        if !merges.contains(where: { $0 == (a, b) }) { merges.append((a, b)) }
      }
      tok = try Tokenizer(merges: merges)
    }
    try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try tok.save(to: dir + "/tokenizer.json")
    _ = try Identity.generate(in: dir + "/keys/coordinator", name: "bench coordinator", institution: "bench", contact: "", coordinator: true)
    try fm.createDirectory(atPath: dir + "/keys/enrolled", withIntermediateDirectories: true)
    for i in 0..<nodes {
      let id = try Identity.generate(in: dir + "/keys/n\(i)", name: "node \(i)", institution: "bench", contact: "", coordinator: false)
      try id.card.toml().write(toFile: dir + "/keys/enrolled/n\(i).toml", atomically: true, encoding: .utf8)
    }
    let port = 47_200 + Int.random(in: 0..<500)
    let dashboardPort = port + 600
    try """
    [federation]
    id = "bench"
    endpoint = "tcp://\(address):\(port)"
    coordinator_card = "keys/coordinator/card.toml"
    members = "keys/enrolled"
    [model]
    preset = "\(preset)"
    tokenizer = "tokenizer.json"
    [rounds]
    count = \(rounds)
    inner_steps = 1
    deadline_seconds = 3600
    quorum = 1.0
    min_nodes = \(nodes)
    outer_optimizer = "diloco"
    compression = "\(format.name)"
    secure_aggregation = \(secureAggregation)
    \(ring.setting)
    concurrent_uploads = \(concurrentUploads)
    moment_weighting = \(momentWeighting)
    """.write(toFile: dir + "/federation.toml", atomically: true, encoding: .utf8)
    // A lost announcement is repeated after 10 s instead of a minute (nodes on two shared cores can miss one).
    try ("[coordinator]\nfederation = \"federation.toml\"\nidentity = \"keys/coordinator\"\nenrolled = \"keys/enrolled\"\ndata = \"coordinator\"\nwait_report_seconds = 10\n"
       + (probeDashboard ? "dashboard = \"127.0.0.1:\(dashboardPort)\"\n" : ""))
      .write(toFile: dir + "/coordinator.toml", atomically: true, encoding: .utf8)
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var env = ProcessInfo.processInfo.environment
    env["OPENBLAS_NUM_THREADS"] = "1"
    func spawn(_ args: [String], out: String, namespace: String) throws -> Process {
      let p = Process()
      try p.setCommand(exe, args, inNamespace: namespaces.map { $0 + "-" + namespace })
      p.environment = env
      fm.createFile(atPath: out, contents: nil)
      let h = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
      p.standardOutput = h
      p.standardError = h
      try p.run()
      return p
    }
    let coord = try spawn(["coordinator", "--config", dir + "/coordinator.toml"], out: dir + "/coordinator.log", namespace: "coordinator")
    Thread.sleep(forTimeInterval: 0.5)
    var procs: [Process] = []
    let perProcess = max(1, nodesPerProcess)
    for first in stride(from: 0, to: nodes, by: perProcess) {
      let group = first..<min(nodes, first + perProcess)
      var args = ["transport", "instant-node", "--federation", dir + "/federation.toml"]
      for i in group { args += ["--identity", dir + "/keys/n\(i)"] }
      if format == .fp32 { args.append("--fp32") }
      if format == .int4 { args.append("--int4") }
      if encodeEachRound { args.append("--encode-each-round") }
      if streamed { args.append("--streamed") }
      procs.append(try spawn(args, out: dir + "/n\(first).log", namespace: "n\(first)"))
    }
    let probe = probeDashboard ? DashboardProbe(port: dashboardPort) : nil
    var peakKiB = 0, nodesPeakKiB = 0
    // The coordinator's resident set as each round's row appears: flat, or growing with the rounds?
    var residentAtRoundEnds: [Int] = []
    // CPU seconds of every process (coordinator and nodes) between the end of round 1 and the end of the
    // last round, seen from the log: on a shared machine this moves less than wall time does.
    let pids = [coord.processIdentifier] + procs.map(\.processIdentifier)
    var marks: [(rows: Int, cpu: Double, coordinator: Double)] = []
    let end = Date(timeIntervalSinceNow: 1800 * Double(max(1, rounds)))
    // Until the coordinator finishes — or 5 s after every node has exited (refused, or failed: the coordinator
    // would wait for nodes that never come back).
    var nodesGone: Date? = nil
    while coord.isRunning && Date() < end && Date() < (nodesGone ?? .distantFuture) {
      if nodesGone == nil && !procs.contains(where: \.isRunning) { nodesGone = Date(timeIntervalSinceNow: 5) }
      if let s = try? String(contentsOfFile: "/proc/\(coord.processIdentifier)/status", encoding: .utf8),
         let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
         let kb = Int(line.split(separator: " ").dropFirst().first ?? "") { peakKiB = max(peakKiB, kb) }
      nodesPeakKiB = max(nodesPeakKiB, procs.reduce(0) { $0 + residentKiB($1.processIdentifier) })
      let done = tableRows(dir + "/coordinator.log").count
      // The dashboard is timed from the end of round 1 (start-up answers are not a round's) to the last.
      if done >= 1 && done < rounds { probe?.start() } else { probe?.pause() }
      if done >= 1 && done > (marks.last?.rows ?? 0) {
        marks.append((done, cpuSeconds(pids), cpuSeconds([coord.processIdentifier])))
        residentAtRoundEnds.append(residentKiB(coord.processIdentifier))
      }
      Thread.sleep(forTimeInterval: 0.05)
    }
    probe?.stop()
    for p in procs + [coord] where p.isRunning { p.terminate() }
    let log = (try? String(contentsOfFile: dir + "/coordinator.log", encoding: .utf8)) ?? ""
    let rows = tableRows(dir + "/coordinator.log")
    let secs = rows.compactMap { Double($0[7].split(separator: " ").first ?? "") }
    let counts = rows.map { $0[2].replacingOccurrences(of: " ", with: "") }
    guard counts.allSatisfy({ $0 == "\(nodes)/\(nodes)" }) else { throw BenchError("not every node's update was applied in every round (\(counts)):\n\(log)") }
    guard secs.count == rounds else { throw BenchError("the coordinator did not finish its rounds:\n\(log)") }
    let steady = Array(secs.dropFirst())
    let modelMB = Double(mc.parameterCount * 4) / 1e6
    var cpu = Double.nan, coordCPU = Double.nan
    if let a = marks.first, let b = marks.last, b.rows > a.rows {
      cpu = (b.cpu - a.cpu) / Double(b.rows - a.rows)
      coordCPU = (b.coordinator - a.coordinator) / Double(b.rows - a.rows)
    }
    // The most uploads that streamed at once in any round (the coordinator logs it when more than one may).
    let atOnce = log.split(separator: "\n").compactMap { line -> Int? in
      guard let r = line.range(of: " uploads streamed at once") else { return nil }
      return Int(line[..<r.lowerBound].split(separator: " ").last ?? "")
    }.max() ?? 1
    var extra = ""
    if exportLast, let last = rows.last.flatMap({ Int($0[1]) }) {
      let out = dir + "/export"
      let t0 = Date()
      let p = try spawn(["export", "--config", dir + "/coordinator.toml", "\(last)", "--out", out], out: dir + "/export.log", namespace: "coordinator")
      p.waitUntilExit()
      guard p.terminationStatus == 0 else { throw BenchError("agora export failed:\n" + ((try? String(contentsOfFile: dir + "/export.log", encoding: .utf8)) ?? "")) }
      let exportSeconds = Date().timeIntervalSince(t0)
      let files = try fm.contentsOfDirectory(atPath: out).filter { $0.hasSuffix(".safetensors") }
      let shards = files.filter { $0.hasPrefix("model-") }.count
      let largest = try files.map { (try fm.attributesOfItem(atPath: out + "/" + $0)[.size] as? Int) ?? 0 }.max() ?? 0
      let t1 = Date()
      let back = try HuggingFaceImport.read(out)
      let importSeconds = Date().timeIntervalSince(t1)
      let store = try Registry(dataDir: dir + "/coordinator", federation: "bench", create: false)
      let held = try VersionExport.load(last, from: store).parameters
      let equal = back.parameters.count == held.count && memcmp(back.parameters.pointer, held.pointer, 4 * held.count) == 0
      guard equal else { throw BenchError("version \(last) exported and imported back differs from the registry's") }
      extra += String(format: ",\"exported_version\":%d,\"export_s\":%.1f,\"shards\":%d,\"largest_shard_gb\":%.2f,\"import_s\":%.1f,\"imported_equal\":true",
                      last, exportSeconds, shards, Double(largest) / 1e9, importSeconds)
    }
    if streamed || perProcess > 1 {
      extra += String(format: ",\"node_processes\":%d,\"nodes_streamed\":%@,\"node_processes_peak_rss_mb\":%.0f", procs.count, streamed ? "true" : "false", Double(nodesPeakKiB) / 1000)
    }
    extra += ",\"coordinator_rss_mb_at_round_ends\":[" + residentAtRoundEnds.map { String(format: "%.0f", Double($0) / 1000) }.joined(separator: ",") + "]"
    if let probe {
      let t = probe.times.sorted()
      guard !t.isEmpty else { throw BenchError("the dashboard answered no request during the rounds (\(probe.failures) failed)") }
      extra += String(format: ",\"dashboard_requests\":%d,\"dashboard_failed\":%d,\"dashboard_ms_median\":%.1f,\"dashboard_ms_p99\":%.1f,\"dashboard_ms_max\":%.1f,\"dashboard_slowest\":\"%@\"",
                      t.count, probe.failures, 1000 * median(t), 1000 * t[min(t.count - 1, Int(Double(t.count) * 0.99))], 1000 * t.last!, probe.slowest)
    }
    print(String(format: "{\"concurrent_uploads\":%d,\"streamed_at_once\":%d,\"nodes\":%d,\"params\":%d,\"updates\":\"%@\",\"first_round_s\":%.2f,\"round_s_median\":%.2f,\"cpu_s_per_round\":%.2f,\"coordinator_cpu_s_per_round\":%.2f,\"coordinator_peak_mb\":%.0f,\"model_mb\":%.1f,\"peak_over_model\":%.2f,\"upload_mb_per_node\":%.2f%@}",
                 concurrentUploads, atOnce, nodes, mc.parameterCount, format.name + (streamed ? ", streamed" : "") + (momentWeighting > 0 ? ", moments" : "") + (secureAggregation ? ", secure aggregation, \(ring): \(ring.bits(participants: nodes))-bit" : encodeEachRound ? ", encoded each round" : ""), secs[0], median(steady.isEmpty ? secs : steady), cpu, coordCPU,
                 Double(peakKiB) / 1000, modelMB, Double(peakKiB) / 1000 / modelMB, (rows.last.flatMap { Double($0[4]) } ?? .nan) / Double(nodes) / 1e6, extra))
  }

  /// Resident set of a process now, in KiB (0 once it is gone).
  func residentKiB(_ pid: Int32) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
  }

  /// The round table's rows in a coordinator log (cells trimmed).
  func tableRows(_ path: String) -> [[String]] {
    let log = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    return log.split(separator: "\n").map { $0.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) } }.filter { $0.count >= 8 && Int($0[0]) != nil }
  }

  /// User + system seconds of these processes so far (from /proc/<pid>/stat; a process gone counts 0).
  func cpuSeconds(_ pids: [Int32]) -> Double {
    let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
    var total = 0.0
    for pid in pids {
      guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = s.lastIndex(of: ")") else { continue }
      // Fields after the command name: state is field 3, utime 14, stime 15.
      let f = s[s.index(after: close)...].split(separator: " ")
      if f.count > 13, let u = Double(f[11]), let k = Double(f[12]) { total += (u + k) / tick }
    }
    return total
  }
}
