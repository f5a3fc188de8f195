import AgoraBench
import AgoraRounds
import ArgumentParser

struct CoordinatorBench: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "coordinator",
    abstract: "Seconds per round and the coordinator's peak memory with N node processes that skip training, all on loopback, encryption on.")

  @Option(help: "Node processes.")
  var nodes: Int = CoordinatorBenchmark().nodes
  @Option(help: "Model preset (bench-14m has 13.9M parameters).")
  var preset: String = CoordinatorBenchmark().preset
  @Option(help: "Rounds (the first is reported separately: it includes connection set-up).")
  var rounds: Int = CoordinatorBenchmark().rounds
  @Flag(help: "Send fp32 updates instead of int8.")
  var fp32 = false
  @Flag(help: "Send int4 updates instead of int8.")
  var int4 = false
  @Option(help: "Nodes per node process (threads of one process); 1 = a process per node.")
  var nodesPerProcess: Int = CoordinatorBenchmark().nodesPerProcess
  @Flag(help: "Nodes make each update from a seed chunk by chunk while sending it and hold none of it (int8 or int4): how many nodes, or a 1B model's, fit on one machine.")
  var streamed = false
  @Flag(help: "Serve the coordinator's dashboard and time its answers (page, /api/v1, /metrics) from the end of round 1 to the last round.")
  var probeDashboard = false
  @Flag(name: .customLong("export"), help: "After the rounds, export the last version with `agora export` (sharded safetensors above 2 GB), import it back with the pilot-model import and compare it bit for bit with the registry's.")
  var exportLast = false
  @Flag(help: "Keep the working directory (keys, configs, every process's log) and print its path.")
  var keep = false
  @Flag(help: "Rounds with secure aggregation (SPEC §7.2): masked updates in the ring, unmasked once per round.")
  var secureAggregation = false
  @Option(help: "With --secure-aggregation: a fixed ring of this many bits (rounds.secure_aggregation_bits).")
  var bits: Int?
  @Option(name: .customLong("node-bits"), help: "With --secure-aggregation: each node's bits; the ring grows with N (rounds.secure_aggregation_node_bits, default 3).")
  var nodeBits: Int?
  @Flag(help: "Plain mode: nodes encode their update anew every round with error feedback, as real nodes do (without it, a plain node sends one update encoded once; a secure node always encodes and masks anew).")
  var encodeEachRound = false
  @Option(help: "Averaging by the nodes' second moments with this α (rounds.moment_weighting; the nodes send moments after their updates).")
  var momentWeighting: Double = CoordinatorBenchmark().momentWeighting
  @Option(help: "Uploads the coordinator receives at once (rounds.concurrent_uploads).")
  var concurrentUploads: Int = CoordinatorBenchmark().concurrentUploads
  @Option(help: "Run the coordinator in network namespace PREFIX-coordinator and node i in PREFIX-n<i> (made by scripts/bench-uploads; needs root).")
  var namespaces: String? = nil
  @Option(help: "With --namespaces: the coordinator's address in its namespace.")
  var address: String = CoordinatorBenchmark().address

  func validate() throws {
    if fp32 && int4 { throw ValidationError("--fp32 or --int4, not both") }
    if streamed && (fp32 || secureAggregation || encodeEachRound || momentWeighting > 0) {
      throw ValidationError("--streamed nodes send plain int8 or int4 updates without moments, encoded once")
    }
    if nodesPerProcess < 1 { throw ValidationError("--nodes-per-process is at least 1") }
    if bits != nil && nodeBits != nil { throw ValidationError("--bits and --node-bits: a fixed ring or each node's bits, not both") }
  }

  func run() throws {
    var b = CoordinatorBenchmark()
    b.nodes = nodes
    b.preset = preset
    b.rounds = rounds
    b.format = fp32 ? .fp32 : int4 ? .int4 : .int8
    b.nodesPerProcess = nodesPerProcess
    b.streamed = streamed
    b.probeDashboard = probeDashboard
    b.exportLast = exportLast
    b.keep = keep
    b.secureAggregation = secureAggregation
    b.bits = bits
    b.nodeBits = nodeBits
    b.encodeEachRound = encodeEachRound
    b.momentWeighting = momentWeighting
    b.concurrentUploads = concurrentUploads
    b.namespaces = namespaces
    b.address = address
    try b.run()
  }
}
