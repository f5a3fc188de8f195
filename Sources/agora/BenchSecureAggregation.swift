import AgoraBench
import ArgumentParser

/// The compute secure aggregation adds to a round, without transport: every node's masking and packing and
/// the coordinator's folding and unmasking of n updates of P parameters, in one process, one after another.
struct SecureAggregationBench: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "secure-aggregation",
    abstract: "Time secure aggregation's masks (AES-256-CTR), packing, folding and unmasking for n nodes and P parameters (no transport).")

  @Option(help: "Parameters per update (bench-14m: 13,977,984 with its 4,096-token vocabulary).")
  var parameters: Int = SecureAggregationBenchmark().parameters
  @Option(help: "Nodes.")
  var nodes: Int = SecureAggregationBenchmark().nodes
  @Option(help: "Ring bits per value.")
  var bits: Int = SecureAggregationBenchmark().bits
  @Option(help: "Nodes that drop out after sharing (their pairwise masks are rebuilt and removed).")
  var dropouts: Int = SecureAggregationBenchmark().dropouts
  @Option(help: "Threads for the masks.")
  var threads: Int = SecureAggregationBenchmark().threads
  @Option(help: "Repetitions (medians are printed).")
  var repetitions: Int = SecureAggregationBenchmark().repetitions

  func run() throws {
    var b = SecureAggregationBenchmark()
    b.parameters = parameters
    b.nodes = nodes
    b.bits = bits
    b.dropouts = dropouts
    b.threads = threads
    b.repetitions = repetitions
    try b.run()
  }
}
