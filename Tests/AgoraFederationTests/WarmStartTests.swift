import AgoraRegistry
import AgoraHarness
import AgoraTestSupport
import Foundation
import Testing

/// `model.warm_start_steps`: the coordinator trains version 0 on the public corpus before round 1, records it,
/// and the nodes start from it; without a public corpus the setting is a configuration error.
@Suite(.serialized) struct WarmStartTests {
  @Test func versionZeroIsTrainedOnThePublicCorpusAndRecorded() throws {
    let h = try Harness(nodes: [("east", ["de"])], rounds: 1, innerSteps: 5, quorum: 1.0, deadline: 120, extra: "[public]\ndata = [\"data/de\"]")
    defer { h.cleanup() }
    let file = h.dir + "/federation.toml"
    let toml = try String(contentsOfFile: file, encoding: .utf8)
    try toml.replacingOccurrences(of: "[model]\n", with: "[model]\nwarm_start_steps = 30\n").write(toFile: file, atomically: true, encoding: .utf8)
    let c = try h.coordinator()
    let node = try h.node("east")
    #expect(h.wait(c, seconds: 180) && c.terminationStatus == 0, "\(h.read("coordinator.log"))")
    _ = h.wait(node, seconds: 15)
    let log = h.read("coordinator.log")
    print(log)
    #expect(log.contains("warm start: step 30/30"), "\(log)")
    let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
    let v0 = try store.version(0)
    #expect(v0.tokens == 30 * 8 * 64, "version 0 records the tokens of its warm start: \(v0.tokens)")
    #expect(try store.events().contains { $0.kind == "warm start" && $0.detail.contains("30 steps") })
    // The version-0 line of the final table starts from the warm model: well below a random model's ≈ 9 bits/byte.
    let first = log.split(separator: "\n").drop { !$0.hasPrefix("bits per byte per language") }.dropFirst().first
    #expect(first.flatMap { Double($0.split(separator: " ")[1]) }.map { $0 < 6 } == true, "\(first ?? "")")
  }

  @Test func aWarmStartWithoutAPublicCorpusIsAConfigurationError() throws {
    let h = try Harness(nodes: [("east", ["de"])], rounds: 1, innerSteps: 5)
    defer { h.cleanup() }
    let file = h.dir + "/federation.toml"
    let toml = try String(contentsOfFile: file, encoding: .utf8)
    try toml.replacingOccurrences(of: "[model]\n", with: "[model]\nwarm_start_steps = 30\n").write(toFile: file, atomically: true, encoding: .utf8)
    let (status, out) = try h.run(["coordinator", "--config", h.dir + "/coordinator.toml"])
    #expect(status != 0 && out.contains("model.warm_start_steps") && out.contains("public"), "\(out)")
  }
}
