import AgoraHarness
import AgoraTestSupport
import Foundation
import Testing

/// The dashboard of a real coordinator (`agora coordinator`), seen by a real browser.
@Suite(.serialized) struct BrowserTests {
  /// The dashboard of a running federation in headless Chromium: the round table has the rounds, the three SVG
  /// plots load, the institutions' own scores are listed, the console shows no error, and a screenshot is saved (.agora/screenshots/dashboard.png).
  @Test func dashboardRendersInHeadlessChromium() throws {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    _ = try #require(chromium, "Chromium is missing: scripts/setup --python installs it")
    let h = try Harness(nodes: [("east", ["de"]), ("west", ["fr", "it"])], rounds: 8, innerSteps: 150, quorum: 1.0, deadline: 60)
    defer { h.cleanup() }
    let port = h.port + 1 < 65535 ? h.port + 1 : h.port - 1
    let coordinatorFile = h.dir + "/coordinator.toml"
    try (String(contentsOfFile: coordinatorFile, encoding: .utf8) + "\ndashboard = \"127.0.0.1:\(port)\"\n").write(toFile: coordinatorFile, atomically: true, encoding: .utf8)
    let c = try h.coordinator()
    let nodes = try h.nodes.map { try h.node($0) }
    defer { for p in nodes + [c] where p.isRunning { p.terminate() } }
    #expect(h.waitForRound(2, "round_ended") != nil)
    #expect(c.isRunning, "the federation is still running: \(h.read("coordinator.log"))")
    let shots = repoRoot + "/.agora/screenshots"
    try FileManager.default.createDirectory(atPath: shots, withIntermediateDirectories: true)
    func chrome(_ args: [String], fragment: String = "") throws -> (String, String) {
      try headlessChromium("http://127.0.0.1:\(port)/" + fragment, args, profile: h.dir + "/chromium")
    }
    let (dom, log) = try chrome(["--dump-dom"])
    #expect(dom.contains("data-refreshed=\"yes\""), "the page's script ran and fetched the API")
    let table = dom.components(separatedBy: "<table id=\"rounds\">").dropFirst().first?.components(separatedBy: "</table>").first ?? ""
    #expect(table.components(separatedBy: "<tr>").count >= 4, "the round table lists the rounds: \(table.prefix(400))")
    #expect(dom.contains("id=\"plot-bpb\"") && dom.components(separatedBy: "data-loaded=\"yes\"").count == 4, "the three SVG plots loaded")
    // Federated evaluation: the institutions' own figures, one row per (language, institution).
    let inst = dom.components(separatedBy: "<table id=\"institutions\">").dropFirst().first?.components(separatedBy: "</table>").first ?? ""
    #expect(inst.components(separatedBy: "<tr>").count == 1 + 3 + 1 && inst.contains("<td>it</td><td>west</td>"), "\(inst.prefix(600))")
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
