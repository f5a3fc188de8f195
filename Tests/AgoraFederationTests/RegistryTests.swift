import AgoraCrypto
import AgoraRegistry
import AgoraWire
import Foundation
import Testing
@testable import AgoraFederation

/// The coordinator's registry under crashes, corruption and its command-line tools.
@Suite(.serialized) struct RegistryTests {
  /// SIGKILL of the coordinator at every stage of a round — before aggregation, after it, in the middle of
  /// writing a version (weights written, optimizer state and commit not), right after a commit — and a restart
  /// each time: it resumes from the last committed version, the nodes (never restarted) reconnect and rejoin by
  /// themselves, no version is lost or half-written, and `agora verify` passes.
  @Test func coordinatorKilledAtEveryStageResumesAndVerifies() throws {
    let h = try Harness(nodes: [("east", ["de", "pl"]), ("west", ["fr", "es"])], rounds: 7, innerSteps: 5, quorum: 1.0, deadline: 12)
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
    #expect(h.read("east.log").contains("joining again") || h.read("west.log").contains("joining again"), "nodes rejoined by themselves")

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

  /// SIGINT in the middle of a round: the coordinator abandons the round whole (nothing of it recorded), finishes
  /// writing the version before it, and exits 0; SIGTERM stops a node cleanly. A restart carries on from there.
  @Test func sigintMidRoundAbandonsTheRoundAndNothingIsHalfWritten() throws {
    let h = try Harness(nodes: [("east", ["de"]), ("west", ["fr"])], rounds: 30, innerSteps: 400, quorum: 1.0, deadline: 120)
    defer { h.cleanup() }
    let c = try h.coordinator()
    let nodes = try h.nodes.map { try h.node($0) }
    defer { for n in nodes where n.isRunning { n.terminate() } }
    // Wait until round 2 is under way (its nodes are training), then interrupt.
    let end = Date(timeIntervalSinceNow: 120)
    while Date() < end, !h.read("coordinator.log").contains("    1 |") { Thread.sleep(forTimeInterval: 0.2) }
    Thread.sleep(forTimeInterval: 1)
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

  /// An exported version is a directory transformers loads as GPT2LMHeadModel and generates from, with a model
  /// card and a training-data summary naming every contributor and language.
  @Test func exportLoadsInTransformersWithATrainingDataSummary() throws {
    let h = try Harness(nodes: [("north", ["de", "sv"]), ("south", ["it"])], rounds: 2, innerSteps: 5)
    defer { h.cleanup() }
    let c = try h.coordinator()
    let nodes = try h.nodes.map { try h.node($0) }
    #expect(h.wait(c, seconds: 120) && c.terminationStatus == 0)
    for n in nodes { _ = h.wait(n, seconds: 15) }
    let out = h.dir + "/export"
    let (status, text) = try h.run(["export", "2", "--config", h.dir + "/coordinator.toml", "--out", out])
    #expect(status == 0 && text.contains("signature valid"), "\(text)")
    for f in ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md", "training_data.json"] {
      #expect(FileManager.default.fileExists(atPath: out + "/" + f), "\(f) written")
    }
    let summary = try JSONDecoder().decode(TrainingDataSummary.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/training_data.json")))
    #expect(Set(summary.contributors.map(\.name)) == ["north", "south"])
    #expect(Set(summary.tokensPerLanguage.keys) == ["de", "sv", "it"])
    #expect(summary.rounds == [1, 2] && summary.tokens == summary.tokensPerLanguage.values.reduce(0, +))
    #expect(summary.contributors.allSatisfy { $0.seconds > 0 && $0.steps == 10 }, "CPU-seconds and steps reported by the nodes")
    #expect(summary.contributors.first { $0.name == "north" }.map { Set($0.tokensPerLanguage.keys) == ["de", "sv"] } == true)
    let card = try String(contentsOfFile: out + "/README.md", encoding: .utf8)
    #expect(card.contains("north") && card.contains("Training data") && card.contains("signature valid"))
    // transformers loads it and generates (the Python environment comes from scripts/setup --python).
    let python = ProcessInfo.processInfo.environment["AGORA_PYTHON"] ?? repoRoot + "/.venv/bin/python"
    try #require(FileManager.default.isExecutableFile(atPath: python), "no Python environment at \(python): run scripts/setup --python")
    let p = Process()
    p.executableURL = URL(fileURLWithPath: python)
    p.arguments = [repoRoot + "/scripts/export_check.py", out]
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let outText = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    #expect(p.terminationStatus == 0, "\(outText)")
    #expect(outText.contains("\"loaded\": \"GPT2LMHeadModel\""), "\(outText)")
  }

  /// A data directory that is not what it should be stops the coordinator with an error naming the file and
  /// what to do; nothing is deleted.
  @Test func missingOrCorruptRegistryIsAClearErrorAndNothingIsDeleted() throws {
    let dir = NSTemporaryDirectory() + "agora-registry-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try FileManager.default.createDirectory(atPath: dir + "/blobs", withIntermediateDirectories: true)
    try Data("precious".utf8).write(to: URL(fileURLWithPath: dir + "/blobs/0123"))
    #expect(throws: RegistryError.missingDatabase(dataDir: dir)) { _ = try Registry(dataDir: dir, federation: "f", create: true) }
    #expect(FileManager.default.fileExists(atPath: dir + "/blobs/0123"))
    try Data("not a database at all, just text".utf8).write(to: URL(fileURLWithPath: dir + "/registry.sqlite"))
    #expect(throws: RegistryError.unreadableDatabase(path: dir + "/registry.sqlite", reason: "not an SQLite database")) {
      _ = try Registry(dataDir: dir, federation: "f", create: true)
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/registry.sqlite")) == Data("not a database at all, just text".utf8))
    try FileManager.default.removeItem(atPath: dir + "/registry.sqlite")
    try FileManager.default.removeItem(atPath: dir + "/blobs/0123")
    // Another federation's registry is refused.
    _ = try Registry(dataDir: dir, federation: "alpha", create: true)
    #expect(throws: RegistryError.wrongFederation(path: dir + "/registry.sqlite", expected: "beta", found: "alpha")) {
      _ = try Registry(dataDir: dir, federation: "beta", create: true)
    }
    // The event log is append-only.
    let store = try Registry(dataDir: dir, federation: "alpha", create: false)
    try store.record(event: "test", subject: "x", detail: "y")
    #expect(throws: (any Error).self) { try store.tamperWithEventsForTesting() }
    #expect(try store.events().count == 1)
    // A blob that does not hash to its name is refused when read.
    let hash = try [UInt8](repeating: 7, count: 64).withUnsafeBytes { try store.writeBlob($0) }
    try Data([1, 2, 3]).write(to: URL(fileURLWithPath: store.blobPath(hash)))
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
    defer { out.deallocate() }
    #expect(throws: RegistryError.self) { try store.readBlob(hex(hash), into: out, what: "test") }
  }

  /// The dashboard of a running federation in headless Chromium: the round table has the rounds, both SVG
  /// plots load, the console shows no error, and a screenshot is saved (.agora/screenshots/dashboard.png).
  @Test func dashboardRendersInHeadlessChromium() throws {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    let browser = try #require(chromium, "Chromium is missing: scripts/setup --python installs it")
    let h = try Harness(nodes: [("east", ["de"]), ("west", ["fr", "it"])], rounds: 8, innerSteps: 150, quorum: 1.0, deadline: 60)
    defer { h.cleanup() }
    let port = h.port + 1 < 65535 ? h.port + 1 : h.port - 1
    let coordinatorFile = h.dir + "/coordinator.toml"
    try (String(contentsOfFile: coordinatorFile, encoding: .utf8) + "\ndashboard = \"127.0.0.1:\(port)\"\n").write(toFile: coordinatorFile, atomically: true, encoding: .utf8)
    let c = try h.coordinator()
    let nodes = try h.nodes.map { try h.node($0) }
    defer { for p in nodes + [c] where p.isRunning { p.terminate() } }
    let end = Date(timeIntervalSinceNow: 120)
    while Date() < end, !h.read("coordinator.log").contains("    2 |") { Thread.sleep(forTimeInterval: 0.2) }
    #expect(c.isRunning, "the federation is still running: \(h.read("coordinator.log"))")
    let shots = repoRoot + "/.agora/screenshots"
    try FileManager.default.createDirectory(atPath: shots, withIntermediateDirectories: true)
    func chrome(_ args: [String], fragment: String = "") throws -> (String, String) {
      let p = Process()
      p.executableURL = URL(fileURLWithPath: browser)
      p.arguments = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0",
                     "--user-data-dir=" + h.dir + "/chromium", "--virtual-time-budget=6000", "--window-size=1200,1500"] + args + ["http://127.0.0.1:\(port)/" + fragment]
      let out = Pipe(), err = Pipe()
      p.standardOutput = out
      p.standardError = err
      try p.run()
      let o = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
      let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
      p.waitUntilExit()
      return (o, e)
    }
    let (dom, log) = try chrome(["--dump-dom"])
    #expect(dom.contains("data-refreshed=\"yes\""), "the page's script ran and fetched the API")
    let table = dom.components(separatedBy: "<table id=\"rounds\">").dropFirst().first?.components(separatedBy: "</table>").first ?? ""
    #expect(table.components(separatedBy: "<tr>").count >= 4, "the round table lists the rounds: \(table.prefix(400))")
    #expect(dom.contains("id=\"plot-bpb\"") && dom.components(separatedBy: "data-loaded=\"yes\"").count == 3, "both SVG plots loaded")
    #expect(dom.contains("east") && dom.contains("west"), "the nodes table names the nodes")
    let consoleErrors = log.split(separator: "\n").filter { $0.contains("CONSOLE") && ($0.contains("Uncaught") || $0.contains("rror")) }
    #expect(consoleErrors.isEmpty, "console errors: \(consoleErrors)")
    _ = try chrome(["--screenshot=" + shots + "/dashboard.png"])
    // A version's detail: lineage, signature status, training-data summary.
    let (detail, _) = try chrome(["--dump-dom"], fragment: "#v2")
    #expect(detail.contains("<h2>Version 2</h2>") && detail.contains("signature <b>valid</b>") && detail.contains("2 ← 1 ← 0"), "\(detail.suffix(1500))")
    #expect(detail.contains("Model card") && detail.contains("Training data") && detail.contains("signature valid at export"), "the model card is shown")
    // The same overview in a terminal, and the Prometheus metrics.
    let (status, overview) = try h.run(["status", "--coordinator", "http://127.0.0.1:\(port)/"])
    #expect(status == 0 && overview.contains("federation test-federation") && overview.contains("east") && overview.contains("connected"), "\(overview)")
    let curl = Process()
    curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    curl.arguments = ["-sf", "http://127.0.0.1:\(port)/metrics"]
    let pipe = Pipe()
    curl.standardOutput = pipe
    try curl.run()
    let metrics = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    curl.waitUntilExit()
    #expect(metrics.contains("agora_updates_received_total") && metrics.contains("agora_nodes_connected 2"), "\(metrics)")
    let size = (try? FileManager.default.attributesOfItem(atPath: shots + "/dashboard.png")[.size] as? Int) ?? 0
    #expect(size > 10_000, "a screenshot was saved (\(size) bytes)")
  }
}
