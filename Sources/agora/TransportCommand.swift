import AgoraBench
import AgoraRounds
import ArgumentParser
import Foundation

/// Process-level pieces of the transport, used by `agora bench transport` (which starts them as child
/// processes) and by the two-process tests.
struct TransportCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "transport", abstract: "Run one side of a transfer (used by benchmarks and tests).", shouldDisplay: false,
    subcommands: [Receive.self, Sink.self, InstantNodeCommand.self])

  struct Receive: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Coordinator side: admit enrolled nodes, receive sealed updates, print one JSON line per verified update.")

    @Option(help: "Coordinator identity directory (from agora keygen --coordinator).")
    var identity: String
    @Option(help: "Directory of enrolled nodes' card.toml files (*.toml).")
    var enrolled: String
    @Option(help: "Endpoint to bind.")
    var bind: String = "tcp://127.0.0.1:*"
    @Option(help: "Federation id.")
    var federation: String = "bench"
    @Option(help: "Current round.")
    var round: UInt64 = 1
    @Option(help: "Base version hash (64 hex digits).")
    var base: String = String(repeating: "00", count: 32)
    @Option(help: "Exit after this many verified updates.")
    var updates: Int = 1
    @Option(help: "Credit: chunks a node may send ahead of the acknowledged ones.")
    var credit: UInt16 = 8

    func run() throws {
      try TransportBenchProcess.receive(identity: identity, enrolled: enrolled, bind: bind, federation: federation, round: round, base: base,
                                        updates: updates, credit: credit)
    }
  }

  struct Sink: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Plain libzmq reference receiver for the benchmark.")
    @Option(help: "Endpoint to bind.")
    var bind: String = "tcp://127.0.0.1:*"
    @Option(help: "CURVE server secret key (hex); plain TCP without it.")
    var curveSecret: String?
    @Option(help: "Messages to receive before answering.")
    var count: Int

    func run() throws {
      try TransportBenchProcess.sink(bind: bind, curveSecret: curveSecret, count: count)
    }
  }

  struct InstantNodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "instant-node",
      abstract: "Benchmark nodes: each joins, fetches each base, and answers with a fixed update without training.")
    @Option(help: "federation.toml.")
    var federation: String
    @Option(name: .customLong("identity"), help: "A node's identity directory (enrolled at the coordinator); repeat it to run several nodes in this process, one thread each.")
    var identities: [String]
    @Flag(help: "fp32 updates instead of int8.")
    var fp32 = false
    @Flag(help: "int4 updates instead of int8.")
    var int4 = false
    @Flag(help: "Encode the update anew every round, with error feedback (as a real node does).")
    var encodeEachRound = false
    @Flag(help: "Make each update chunk by chunk from a seed while it is sent, holding none of it (int8 or int4).")
    var streamed = false

    func validate() throws {
      if fp32 && int4 { throw ValidationError("--fp32 or --int4, not both") }
      if streamed && fp32 { throw ValidationError("--streamed sends int8 or int4") }
      if identities.isEmpty { throw ValidationError("at least one --identity") }
    }

    func run() throws {
      try InstantNode.serve(federation: federation, identities: identities, format: fp32 ? .fp32 : int4 ? .int4 : .int8,
                            encodeEachRound: encodeEachRound, streamed: streamed)
    }
  }
}
