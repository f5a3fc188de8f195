import AgoraBench
import AgoraCrypto
import ArgumentParser

struct TransportBench: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "transport",
    abstract: "Send an update from this (node) process to a coordinator process over loopback: signed, sealed and chunked, then the same bytes over plain libzmq with and without CURVE.")

  @Option(help: "Update size in MB (10⁶ bytes); 56 is 14M fp32 parameters.")
  var megabytes: Int = TransportBenchmark().megabytes
  @Option(name: .customLong("chunk-kib"), help: "Chunk size in KiB.")
  var chunkKiB: Int = TransportBenchmark().chunkKiB
  @Option(help: "Credit (chunks in flight).")
  var credit: UInt16 = TransportBenchmark().credit
  @Option(help: "Rounds; each runs the three transfers once, and medians are reported.")
  var rounds: Int = TransportBenchmark().rounds
  @Option(name: .customLong("plain-kib"), help: "Message size of the plain-libzmq reference transfers, in KiB.")
  var plainKiB: Int = TransportBenchmark().plainKiB
  @Option(help: "Run only these transfers (comma-separated: agora, curve, plain); the ratio needs agora and curve.")
  var only: String = TransportBenchmark().only
  @Option(help: ArgumentHelp("The envelope's cipher suite: aes256gcm or xchacha20poly1305 (default: what a node on this CPU seals with).", valueName: "suite"))
  var suite: String?
  @Flag(help: "One JSON object instead of the table.")
  var json = false
  @Flag(help: "Only time sealing and opening the envelope in this process (no network), to see the crypto's share.")
  var cryptoOnly = false

  func run() throws {
    var b = TransportBenchmark()
    b.megabytes = megabytes
    b.chunkKiB = chunkKiB
    b.credit = credit
    b.rounds = rounds
    b.plainKiB = plainKiB
    b.only = only
    b.json = json
    b.cryptoOnly = cryptoOnly
    if let suite {
      guard let s = EnvelopeSuite(name: suite) else { throw ValidationError("--suite takes " + EnvelopeSuite.allCases.map(\.description).joined(separator: " or ")) }
      b.suite = s
    }
    try b.run()
  }
}
