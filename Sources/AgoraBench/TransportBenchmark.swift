import AgoraCrypto
import AgoraDigest
import AgoraTransport
import AgoraWire
import Foundation

public struct TransportBenchmark {

  public var megabytes: Int = 56
  public var chunkKiB: Int = 1024
  public var credit: UInt16 = 8
  public var rounds: Int = 3
  public var plainKiB: Int = 1024
  public var only: String = "agora,curve,plain"
  public var json = false
  public var cryptoOnly = false
  /// The envelope's cipher suite (by default what a node on this CPU seals with).
  public var suite: EnvelopeSuite = .preferred

  struct Sample { var seconds: Double; var cpu: Double; var senderCPU: Double }

  public init() {}

  public func run() throws {
    let dir = NSTemporaryDirectory() + "agora-bench-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let coord = try Identity.generate(in: dir + "/coord", name: "bench coordinator", institution: "bench", contact: "", coordinator: true)
    let node = try Identity.generate(in: dir + "/node", name: "bench node", institution: "bench", contact: "", coordinator: false)
    try FileManager.default.createDirectory(atPath: dir + "/enrolled", withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: dir + "/node/card.toml", toPath: dir + "/enrolled/node.toml")
    let bytes = megabytes * 1_000_000, chunk = chunkKiB << 10
    if cryptoOnly { return try timeCrypto(coord: coord, node: node, bytes: bytes, chunk: chunk) }
    let plainSize = plainKiB << 10
    let messages = (bytes + plainSize - 1) / plainSize
    let runs = Set(only.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
    guard !runs.isEmpty, runs.isSubset(of: ["agora", "curve", "plain"]) else { throw BenchError("--only takes agora, curve and/or plain") }
    var agora: [Sample] = [], curve: [Sample] = [], plain: [Sample] = []
    for r in 0..<rounds {
      if runs.contains("agora") { agora.append(try measure(["transport", "receive", "--identity", dir + "/coord", "--enrolled", dir + "/enrolled", "--credit", String(credit)]) { endpoint in
        let client = try Endpoint.client(connect: endpoint, serverKey: coord.card.curvePublic,
                                         keys: CurveKeys(publicKey: node.card.curvePublic, secretKey: node.curveSecret))
        defer { client.close() }
        let sealer = try EnvelopeSealer(context: .init(federation: "bench", round: 1, baseHash: [UInt8](repeating: 0, count: 32), nodeID: node.card.nodeID),
                                        payloadLength: UInt64(bytes), chunkSize: chunk, recipient: coord.card.aggregationPublic!, signingSecretKey: node.signSecret,
                                        suite: suite)
        var block = [UInt8](repeating: 0, count: chunk)
        for i in 0..<chunk { block[i] = UInt8(truncatingIfNeeded: i &* 131) }
        _ = try UploadSender(endpoint: client, transfer: UInt64(r + 1), round: 1).send(sealer: sealer, tokens: 0, steps: 0, loss: 0) { i in
          let n = min(chunk, bytes - i * chunk)
          return n == chunk ? block : Array(block.prefix(n))
        }
      }) }
      let serverBox = try Sodium.boxKeypair()
      if runs.contains("curve") { curve.append(try measure(["transport", "sink", "--count", String(messages), "--curve-secret", hex(serverBox.secretKey)]) { endpoint in
        try PlainSink.send(connect: endpoint, serverKey: serverBox.publicKey, keys: CurveKeys(publicKey: node.card.curvePublic, secretKey: node.curveSecret),
                           count: messages, size: plainSize)
      }) }
      if runs.contains("plain") { plain.append(try measure(["transport", "sink", "--count", String(messages)]) { endpoint in
        try PlainSink.send(connect: endpoint, serverKey: nil, keys: nil, count: messages, size: plainSize)
      }) }
    }
    func mbps(_ s: [Sample], _ n: Int) -> Double { s.isEmpty ? .nan : Double(n) / median(s.map(\.seconds)) / 1e6 }
    func cpuPerGB(_ s: [Sample], _ n: Int) -> Double { s.isEmpty ? .nan : median(s.map(\.cpu)) / (Double(n) / 1e9) }
    let plainBytes = messages * plainSize
    let a = mbps(agora, bytes), c = mbps(curve, plainBytes), p = mbps(plain, plainBytes)
    // Each round runs Agora and then plain CURVE back to back: the ratio within a round sees the same
    // machine load, so its median is steadier on a shared machine than the ratio of the two medians.
    let pairs = zip(agora, curve).map { (Double(bytes) / $0.seconds) / (Double(plainBytes) / $1.seconds) }.sorted()
    let paired = pairs.isEmpty ? Double.nan : median(pairs)
    if json {
      func num(_ x: Double) -> String { x.isFinite ? "\(x)" : "null" }  // a transfer left out with --only
      print("{\"suite\":\"\(suite)\",\"megabytes\":\(megabytes),\"chunk_kib\":\(chunkKiB),\"plain_kib\":\(plainKiB),\"agora_mb_s\":\(num(a)),\"curve_mb_s\":\(num(c)),\"plain_mb_s\":\(num(p)),\"agora_cpu_s_per_gb\":\(num(cpuPerGB(agora, bytes))),\"curve_cpu_s_per_gb\":\(num(cpuPerGB(curve, plainBytes))),\"plain_cpu_s_per_gb\":\(num(cpuPerGB(plain, plainBytes))),\"ratio_to_curve\":\(num(a / c)),\"paired_ratio_median\":\(num(paired))}")
    } else {
      print("update \(megabytes) MB in \(chunkKiB) KiB chunks, credit \(credit), \(rounds) rounds, node and coordinator in separate processes on loopback")
      func split(_ s: [Sample], _ n: Int) -> String {
        s.isEmpty ? "" : String(format: "  (node %.2f + coordinator %.2f)", median(s.map(\.senderCPU)) / (Double(n) / 1e9),
                                median(s.map { $0.cpu - $0.senderCPU }) / (Double(n) / 1e9))
      }
      print(String(format: "  Agora (CURVE + ZAP, signed, sealed, chunked): %7.1f MB/s  %5.2f CPU-s/GB", a, cpuPerGB(agora, bytes)) + split(agora, bytes)
            + "  [envelope suite \(suite)]")
      let size = plainKiB % 1024 == 0 ? "\(plainKiB >> 10) MiB" : "\(plainKiB) KiB"
      print(String(format: "  plain libzmq, CURVE on (%@ messages):%@ %7.1f MB/s  %5.2f CPU-s/GB", size, String(repeating: " ", count: max(0, 9 - size.count)), c, cpuPerGB(curve, plainBytes)) + split(curve, plainBytes))
      print(String(format: "  plain libzmq, CURVE off (%@ messages):%@%7.1f MB/s  %5.2f CPU-s/GB", size, String(repeating: " ", count: max(0, 9 - size.count)), p, cpuPerGB(plain, plainBytes)))
      print(String(format: "  Agora / CURVE-on libzmq: %.0f%% (of the medians); per round: median %.0f%%, range %.0f–%.0f%%", 100 * a / c,
                   100 * paired, 100 * (pairs.first ?? .nan), 100 * (pairs.last ?? .nan)))
    }
  }

  func timeCrypto(coord: Identity, node: Identity, bytes: Int, chunk: Int) throws {
    var block = [UInt8](repeating: 0, count: chunk)
    for i in 0..<chunk { block[i] = UInt8(truncatingIfNeeded: i &* 131) }
    let ctx = Envelope.Context(federation: "bench", round: 1, baseHash: [UInt8](repeating: 0, count: 32), nodeID: node.card.nodeID)
    // Sealed chunks go to memory touched beforehand, as the transport's reused send buffers are.
    var sealed: [[UInt8]] = (0..<((bytes + chunk - 1) / chunk)).map { i in [UInt8](repeating: 1, count: min(chunk, bytes - i * chunk) + SecretStream.overhead) }
    var speeds: [(EnvelopeSuite, seal: Double, open: Double)] = []
    for suite in EnvelopeSuite.allCases {
      let sealer = try EnvelopeSealer(context: ctx, payloadLength: UInt64(bytes), chunkSize: chunk, recipient: coord.card.aggregationPublic!,
                                      signingSecretKey: node.signSecret, suite: suite)
      let t0 = Date()
      for i in 0..<sealer.head.chunkCount {
        let n = min(chunk, bytes - i * chunk)
        try block.withUnsafeBytes { b in
          try sealed[i].withUnsafeMutableBytes { try sealer.seal(UnsafeRawBufferPointer(rebasing: b[0..<n]), into: $0) }
        }
      }
      let final = try sealer.finish()
      let t1 = Date()
      let opener = try EnvelopeOpener(headBytes: sealer.headBytes, expected: ctx, aggregationPublicKey: coord.card.aggregationPublic!,
                                      aggregationSecretKey: coord.aggregationSecret!, sessionNodeID: nil) { _ in node.card.signPublic }
      for c in sealed { _ = try opener.open(c) }
      try opener.finish(final)
      let t2 = Date()
      speeds.append((suite, Double(bytes) / 1e6 / t1.timeIntervalSince(t0), Double(bytes) / 1e6 / t2.timeIntervalSince(t1)))
    }
    var h = Date()
    for _ in 0..<(bytes / chunk) { _ = SHA256.hash(block) }
    let hashSecs = Date().timeIntervalSince(h)
    h = Date()
    let digest = PayloadDigest()
    block.withUnsafeBytes { b in for _ in 0..<(bytes / chunk) { digest.update(b) } }
    _ = digest.finish()
    let digestSecs = Date().timeIntervalSince(h)
    h = Date()
    for _ in 0..<(bytes / chunk) { _ = Sodium.blake2b(block) }
    let blakeSecs = Date().timeIntervalSince(h)
    h = Date()
    let ss = try SecretStreamPush(key: SecretStream.keygen())
    for _ in 0..<(bytes / chunk) { _ = try ss.push(block) }
    let ssSecs = Date().timeIntervalSince(h)
    h = Date()
    let gcm = try GCMStreamPush(key: SecretStream.keygen())
    for _ in 0..<(bytes / chunk) { _ = try gcm.push(block) }
    let gcmSecs = Date().timeIntervalSince(h)
    let gb = Double(bytes) / 1e9
    for (suite, seal, open) in speeds {
      print(String(format: "one thread, envelope suite %@: seal %.0f MB/s, open %.0f MB/s%@", suite.description, seal, open, suite == EnvelopeSuite.preferred ? " (what a node on this CPU seals with)" : ""))
    }
    print(String(format: "of which the payload digest %.0f MB/s (BLAKE3, %@), secretstream push %.0f MB/s, AES-256-GCM push %.0f MB/s (for comparison: SHA-256 %.0f MB/s, BLAKE2b %.0f MB/s)",
                 gb * 1000 / digestSecs,
                 ["avx512": "16 chunks at once with AVX-512", "avx2": "8 chunks at once with AVX2", "portable": "portable code"][Blake3.best.rawValue]!, gb * 1000 / ssSecs, gb * 1000 / gcmSecs, gb * 1000 / hashSecs, gb * 1000 / blakeSecs))
  }

  /// Starts `agora ARGS` as the receiving process, waits for its READY line, runs `body(endpoint)` as the
  /// sender, waits for the child to exit, and returns wall time and CPU seconds of both processes (the
  /// receiver's from READY on, as it reports on its last line).
  func measure(_ args: [String], _ body: (String) throws -> Void) throws -> Sample {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    p.arguments = args
    // The receiver does no linear algebra: without this, OpenBLAS's worker threads start and spin
    // (sched_yield) in the child and take CPU from the transfer being measured.
    var env = ProcessInfo.processInfo.environment
    env["OPENBLAS_NUM_THREADS"] = "1"
    p.environment = env
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    var line = Data()
    while !line.contains(0x0A) {
      let d = out.fileHandleForReading.availableData
      if d.isEmpty { throw BenchError("receiver exited before it was ready") }
      line.append(d)
    }
    let text = String(decoding: line, as: UTF8.self)
    guard let ready = text.split(separator: "\n").first(where: { $0.hasPrefix("READY ") }) else { throw BenchError("receiver said: \(text)") }
    let endpoint = String(ready.dropFirst(6))
    let cpu0 = cpuSeconds(RUSAGE_SELF.rawValue)
    let t0 = Date()
    try body(endpoint)
    let secs = Date().timeIntervalSince(t0)  // the sender has the final acknowledgement: the transfer is done
    let rest = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw BenchError("receiver failed with status \(p.terminationStatus)") }
    let sender = cpuSeconds(RUSAGE_SELF.rawValue) - cpu0
    // The receiver reports the CPU it used from READY on (its start-up, the same for every receiver, is not
    // part of the transfer).
    let said = String(decoding: line + rest, as: UTF8.self).split(separator: "\n")
    guard let report = said.last(where: { $0.hasPrefix("CPU ") }), let receiver = Double(report.dropFirst(4)) else {
      throw BenchError("receiver did not report its CPU time")
    }
    return Sample(seconds: secs, cpu: sender + receiver, senderCPU: sender)
  }
}
