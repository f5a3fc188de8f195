import AgoraRegistry
import AgoraHarness
import AgoraTestSupport
import Foundation
import Testing

/// A federation across emulated wide-area links (`agora link-emulator` between network namespaces): a slow,
/// lossy link with a long round trip, and an outage in the middle of a round. Heartbeats, credit flow, resume
/// and deadlines must hold: every round makes a version, and the node behind the outage is back in the rounds
/// after it.
@Suite(.serialized, .enabled(if: WideAreaLinks.available, "needs root, iproute2 and /dev/net/tun")) struct WideAreaTests {
  @Test func roundsHoldOnASlowLossyLinkAndThroughAnOutage() throws {
    // Rounds of 150 steps (a few seconds each), so that rounds remain after the outage: the coordinator goes on
    // with the near institution alone while the far one is cut off and rejoins.
    let h = try Harness(nodes: [("far", ["de"]), ("near", ["fr"])], rounds: 8, innerSteps: 150, quorum: 0.5, deadline: 25, bytes: 40_000)
    defer { h.cleanup() }
    // The coordinator in a data centre; one institution behind 2 Mbit/s, 200 ms and 3% loss each way, one
    // behind 20 Mbit/s, 60 ms, 0.5%.
    let net = "10.79.\(getpid() % 200 + 20)"
    let wan = try WideAreaLinks(prefix: "agt\(getpid() % 100_000)", links: [
      "coordinator=\(net).1,none,0,0", "far=\(net).10,2mbit,200,3", "near=\(net).11,20mbit,60,0.5",
    ], dir: h.dir)
    defer { wan.close() }
    let f = h.dir + "/federation.toml"
    try String(contentsOfFile: f, encoding: .utf8).replacingOccurrences(of: "tcp://127.0.0.1:\(h.port)", with: "tcp://\(net).1:\(h.port)")
      .write(toFile: f, atomically: true, encoding: .utf8)
    let coordinator = try h.coordinator(namespace: wan.namespace("coordinator"))
    let nodes = try ["far", "near"].map { try h.node($0, namespace: wan.namespace($0)) }
    defer { for n in nodes where n.isRunning { n.terminate() } }
    // Once round 2 is announced, the far institution's link goes down for 8 s (longer than a session's
    // liveness of 5 heartbeats), in the middle of its round.
    #expect(h.waitForEvent("round_started", log: "far.log", seconds: 180) { $0["round"] as? Int == 2 } != nil)
    try wan.cut(["far"])
    Thread.sleep(forTimeInterval: 8)  // behaviour: the outage itself (longer than a session's liveness)
    wan.restore()
    let finished = h.wait(coordinator, seconds: 300)
    for n in nodes { _ = h.wait(n, seconds: 20) }
    wan.close()
    let log = h.read("coordinator.log")
    #expect(finished && coordinator.terminationStatus == 0, "\(log)")
    // Every round made a version, each within its deadline (25 s) plus the aggregation.
    let rows = log.split(separator: "\n").filter { $0.range(of: #"^ *\d+ \| "#, options: .regularExpression) != nil }
    #expect(rows.count == 8, "\(log)")
    for row in rows {
      let cols = row.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
      #expect(Double(cols[7].split(separator: " ")[0]).map { $0 < 40 } == true, "a round outlasted its deadline: \(row)")
    }
    let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
    #expect(try store.versions().map(\.number) == Array(0...8))
    // The far institution came back: its update is in the last round (2 of 2 nodes), sent over its lossy link.
    #expect(rows.last!.contains(" 2/2 "), "\(rows.last!)")
    #expect(h.events(log: "far.log").contains { $0["event"] as? String == "update_sent" && $0["round"] as? Int == 8 }, "\(h.read("far.log"))")
    // The links really were slow and lossy, and the outage really dropped the far institution's packets.
    let report = wan.report
    let farLine = report.split(separator: "\n").first { $0.hasPrefix("link-emulator: far: up") }.map(String.init) ?? ""
    func count(_ key: String) -> Int { Int(farLine.components(separatedBy: key + " ").dropFirst().first?.split(separator: ",")[0] ?? "") ?? 0 }
    #expect(count("lost") > 0 && count("cut") > 0, "\(report)")
  }
}
