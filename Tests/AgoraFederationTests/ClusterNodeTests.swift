import AgoraRegistry
import AgoraHarness
import AgoraTestSupport
import Foundation
import Testing

/// A node spanning an MPI cluster: `mpirun -np 2 agora node` trains each inner step on half the batch per rank
/// and sums the gradients with MPI_Allreduce. End to end through a round, its version must be the one a single
/// process with the whole batch makes (to floating-point tolerance: only the order of the sums differs).
let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }

@Suite(.serialized, .enabled(if: mpirun != nil, "needs Open MPI's mpirun (openmpi-bin)")) struct ClusterNodeTests {
  /// Runs the federation (one round) with node "a" as one process or as `ranks` MPI ranks; returns version 1's
  /// parameters and the node's log.
  func run(_ h: Harness, ranks: Int) throws -> ([Float], String) {
    try? FileManager.default.removeItem(atPath: h.dir + "/coordinator")
    try? FileManager.default.removeItem(atPath: h.dir + "/work")
    let coordinator = try h.coordinator(log: "coordinator-\(ranks).log")
    let log = "a-\(ranks).log"
    let node: Process
    if ranks == 1 {
      node = try h.node("a", log: log)
    } else {
      node = Process()
      node.executableURL = URL(fileURLWithPath: mpirun!)
      node.arguments = ["-np", "\(ranks)", "--oversubscribe", "--bind-to", "none", "-x", "OPENBLAS_NUM_THREADS=1",
                        agoraBinary, "node", "--config", h.dir + "/a.toml"]
      var env = ProcessInfo.processInfo.environment
      env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
      env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
      node.environment = env
      FileManager.default.createFile(atPath: h.dir + "/" + log, contents: nil)
      let out = try FileHandle(forWritingTo: URL(fileURLWithPath: h.dir + "/" + log))
      node.standardOutput = out
      node.standardError = out
      try node.run()
    }
    let finished = h.wait(coordinator, seconds: 120)
    _ = h.wait(node, seconds: 30)
    #expect(finished && coordinator.terminationStatus == 0, "\(h.read("coordinator-\(ranks).log"))\n\(h.read(log))")
    return (try parameters(h, version: 1), h.read(log))
  }

  @Test func twoRanksMakeTheVersionOfOneProcessWithTheWholeBatch() throws {
    let h = try Harness(nodes: [("a", ["de", "fr"])], rounds: 1, innerSteps: 8, deadline: 60, extra: "broadcast = \"full\"", compression: "fp32")
    defer { h.cleanup() }
    let (one, _) = try run(h, ranks: 1)
    let (two, log) = try run(h, ranks: 2)
    #expect(log.contains("a node of 2 MPI ranks (batch 8 = 2 × 4)"), "\(log)")
    #expect(log.contains("rank 1: done"), "the second rank followed the round: \(log)")
    #expect(one.count == two.count && !one.isEmpty)
    let scale = one.map { abs($0) }.max()!
    let diff = zip(one, two).map { abs($0 - $1) }.max()!
    // The round moved the model (so equal versions say something), and both runs moved it the same way.
    let base = try parameters(h, version: 0)
    let moved = zip(one, base).map { abs($0 - $1) }.max()!
    #expect(moved > 1e-3, "version 1 differs from version 0 by \(moved)")
    #expect(diff <= 1e-4 * scale, "one process and two ranks differ by \(diff) (largest value \(scale), step \(moved))")
  }

  /// With `rounds.overlap_steps` the ranks train ahead together (rank 0 tells the others when the next round's
  /// steps start and sends the folded θ when it lands); every update still counts its round's steps.
  @Test func twoRanksTrainAheadTogether() throws {
    let h = try Harness(nodes: [("a", ["de", "fr"])], rounds: 3, innerSteps: 8, deadline: 60, extra: "overlap_steps = 3\nscore_updates = false")
    defer { h.cleanup() }
    let (_, log) = try run(h, ranks: 2)
    #expect(log.contains("rank 1: done"), "\(log)")
    let lines = log.split(separator: "\n")
    #expect(lines.filter { $0.contains(": round ") && $0.contains(": 8 steps, ") }.count == 3, "\(log)")
    let timing = lines.filter { $0.contains(" timing: ") }
    #expect(timing.count == 3 && timing.first?.contains("(0 steps)") == true, "\(timing)")
    #expect(timing.dropFirst().contains { !$0.contains("(0 steps)") }, "the node trained ahead: \(timing)")
  }

  /// A version's parameters (of the last run): its safetensors blob after the header.
  func parameters(_ h: Harness, version: Int) throws -> [Float] {
    let store = try Registry(dataDir: h.dir + "/coordinator", federation: "test-federation", create: false)
    let blob = try Data(contentsOf: URL(fileURLWithPath: store.blobPath(try store.version(version).hash)))
    let headerLength = blob.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    return blob.dropFirst(8 + headerLength).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
  }
}
