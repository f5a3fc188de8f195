import AgoraCrypto
import AgoraTransport
import AgoraWire
import Foundation

/// The two receiving processes of `agora bench transport` (started as `agora transport receive|sink`) and of the
/// two-process tests: Agora's sealed, chunked upload into a coordinator-side receiver, and plain libzmq.
public enum TransportBenchProcess {
  /// Coordinator side: admits enrolled nodes, receives sealed updates, prints one JSON line per verified update,
  /// "READY endpoint" once bound and "CPU seconds" at the end.
  public static func receive(identity: String, enrolled: String, bind: String, federation: String, round: UInt64, base: String,
                             updates: Int, credit: UInt16) throws {
    let id = try Identity.load(from: identity)
    guard let aggS = id.aggregationSecret, let aggP = id.card.aggregationPublic else { throw BenchError("\(identity) is not a coordinator identity") }
    guard let baseHash = unhex(base), baseHash.count == 32 else { throw BenchError("--base must be 64 hex digits") }
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
    if counter.done < updates { throw BenchError("timed out with \(counter.done) of \(updates) updates") }
    print("CPU \(cpuSeconds(RUSAGE_SELF.rawValue) - cpuAtReady)")  // for agora bench transport
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
  /// The plain-libzmq reference receiver: "READY endpoint", then `count` messages, then "CPU seconds".
  public static func sink(bind: String, curveSecret: String?, count: Int) throws {
    let (endpoint, serve) = try PlainSink.serve(bind: bind, curveSecret: curveSecret.flatMap(unhex), count: count)
    print("READY \(endpoint)")
    fflush(stdout)
    let cpuAtReady = cpuSeconds(RUSAGE_SELF.rawValue)
    try serve()
    print("CPU \(cpuSeconds(RUSAGE_SELF.rawValue) - cpuAtReady)")  // for agora bench transport
  }
}
