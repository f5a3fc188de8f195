import AgoraCrypto
import AgoraRounds
import AgoraNode
import AgoraModel
import AgoraTransport
import AgoraWire
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
      let id = try Identity.load(from: identity)
      guard let aggS = id.aggregationSecret, let aggP = id.card.aggregationPublic else { throw CLIError("\(identity) is not a coordinator identity") }
      guard let baseHash = unhex(base), baseHash.count == 32 else { throw CLIError("--base must be 64 hex digits") }
      let registry = try EnrolmentRegistry.load(directory: enrolled)
      let zap = ZAPHandler(registry: registry) { FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!) }
      try zap.start()
      let server = try Endpoint.server(bind: bind, keys: CurveKeys(publicKey: id.card.curvePublic, secretKey: id.curveSecret))
      let receiver = UploadReceiver(context: .init(federation: federation, round: round, baseHash: baseHash, aggregationPublic: aggP,
                                                   aggregationSecret: aggS, credit: credit), registry: registry)
      // The plaintext is only counted (as the plain-libzmq sink only counts its messages): the envelope's
      // signature, checked before onComplete, proves every byte is the one the node signed.
      let counter = Counter()
      receiver.consumer = counter
      print("READY \(server.boundEndpoint)")
      fflush(stdout)
      let cpuAtReady = cpuSeconds(RUSAGE_SELF.rawValue)
      let deadline = Date(timeIntervalSinceNow: 600)
      while counter.done < updates, Date() < deadline {
        guard let m = server.receive(timeout: 0.5) else { continue }
        if counter.t0 == nil { counter.t0 = Date() }
        receiver.handle(m, endpoint: server)
      }
      usleep(200_000)  // the final acknowledgement leaves before the socket closes
      server.close()
      zap.stop()
      if counter.done < updates { throw CLIError("timed out with \(counter.done) of \(updates) updates") }
      print("CPU \(cpuSeconds(RUSAGE_SELF.rawValue) - cpuAtReady)")  // for agora bench transport
    }
  }

  /// Counts each update's plaintext and prints one JSON line per verified update.
  final class Counter: UploadConsumer {
    var received = 0, done = 0
    var t0: Date? = nil
    func chunk(node: String, index: Int, plaintext: UnsafeRawBufferPointer) throws { received = (index == 0 ? 0 : received) + plaintext.count }
    func completed(_ c: UploadReceiver.Completed) throws {
      done += 1
      let secs = Date().timeIntervalSince(t0 ?? Date())
      print("{\"node\":\"\(c.node)\",\"bytes\":\(c.bytes),\"received\":\(received),\"seconds\":\(secs)}")
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
      let (endpoint, serve) = try PlainSink.serve(bind: bind, curveSecret: curveSecret.flatMap(unhex), count: count)
      print("READY \(endpoint)")
      fflush(stdout)
      let cpuAtReady = cpuSeconds(RUSAGE_SELF.rawValue)
      try serve()
      print("CPU \(cpuSeconds(RUSAGE_SELF.rawValue) - cpuAtReady)")  // for agora bench transport
    }
  }

  struct InstantNodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "instant-node",
      abstract: "A benchmark node: joins, fetches each base, and answers with a fixed update without training.")
    @Option(help: "federation.toml.")
    var federation: String
    @Option(help: "The node's identity directory (enrolled at the coordinator).")
    var identity: String
    @Flag(help: "fp32 updates instead of int8.")
    var fp32 = false
    @Flag(help: "Encode the update anew every round, with error feedback (as a real node does).")
    var encodeEachRound = false

    func run() throws {
      let fed = try FederationConfig(path: federation)
      let tokenizer = try Tokenizer(contentsOf: fed.tokenizer)
      var mc = try GPTConfig.preset(fed.preset)
      mc.vocabSize = tokenizer.vocabSize
      let id = try Identity.load(from: identity)
      let node = try InstantNode(endpoint: fed.endpoint, coordinator: try EnrolmentCard.load(fed.coordinatorCard),
                                 identity: id, federation: fed.id, terms: try fed.terms(tokenizer: tokenizer, model: mc))
      defer { node.shutdown() }
      node.log = { print($0); fflush(stdout) }
      if fed.secureAggregation {
        let layout = ParameterLayout(mc)
        node.secure = try SecureAggregationClient(endpoint: node.endpoint, identity: id, federation: fed, embedding: (layout.wte, mc.vocabSize, mc.channels),
                                                  stop: ManagedAtomicFlag(), log: { print($0); fflush(stdout) })
      }
      node.encodeEachRound = encodeEachRound
      node.moments = fed.momentWeighting > 0
      node.tokens = UInt64(fed.batch * mc.contextLength)
      try node.run(format: fp32 ? .fp32 : .int8)
    }
  }
}
