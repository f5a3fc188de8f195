import AgoraCrypto
@testable import AgoraRounds
import AgoraModel
import AgoraTensor
import AgoraTestSupport
import AgoraTransport
import AgoraWire
import Foundation
import Testing

/// A node's copy of the model follows versions by int8 patch when it holds the parent, and falls back to the
/// whole version when a patch does not lead to the announced hash; a failed fetch leaves its copy alone.
/// Real sockets on 127.0.0.1 (CURVE, no ZAP handler: this test is about blobs, not admission).
@Suite(.serialized) struct VersionPatchTests {
  final class Server: @unchecked Sendable {
    let endpoint: Endpoint
    let blobs = BlobServer(chunkSize: 64 << 10, budget: 3)
    let stop = ManagedAtomicFlag()
    let done = DispatchSemaphore(value: 0)
    var peak = 0
    init(_ endpoint: Endpoint) {
      self.endpoint = endpoint
      Thread { [self] in
        while !stop.isSet {
          if let m = endpoint.receive(timeout: 0.02) { blobs.handle(m, endpoint: endpoint) }
          blobs.serve(endpoint: endpoint)
          peak = max(peak, blobs.queuedChunks)
        }
        done.signal()
      }.start()
    }
    func finish() { stop.set(); done.wait(); endpoint.close() }
  }

  func write(_ buffer: UnsafeRawBufferPointer, _ dir: String) throws -> String {
    let path = dir + "/" + hex(Sodium.blake2b(buffer))
    FileManager.default.createFile(atPath: path, contents: Data(buffer))
    return path
  }

  @Test func nodesFollowVersionsByPatchAndFallBackToTheWholeVersion() throws {
    let dir = NSTemporaryDirectory() + "agora-patch-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let context = ZMQContext(ioThreads: 1)
    let coord = try Identity.generate(in: dir + "/c", name: "c", institution: "c", contact: "", coordinator: true)
    let node = try Identity.generate(in: dir + "/n", name: "n", institution: "n", contact: "", coordinator: false)
    let server = Server(try Endpoint.server(bind: "tcp://127.0.0.1:*", keys: CurveKeys(publicKey: coord.card.curvePublic, secretKey: coord.curveSecret), context: context))
    defer { server.finish() }

    // Version A, a step u, and B = A − deq(Q(u)) made exactly as the coordinator makes it.
    let n = 100_000
    var g = SplitMix64(seed: 11)
    let a = FloatBuffer((0..<n).map { _ in Float(Double(g.next() >> 11) / Double(1 << 53) - 0.5) })
    let u = FloatBuffer((0..<n).map { _ in Float(Double(g.next() >> 11) / Double(1 << 53) - 0.5) * 1e-3 })
    let patch = DeltaCodec.encode(UnsafeBufferPointer(u.buffer), format: .int8, rounding: .stochastic(seed: 1))
    let badPatch = DeltaCodec.encode(UnsafeBufferPointer(u.buffer), format: .int8, rounding: .stochastic(seed: 2))
    let b = FloatBuffer(count: n)
    b.copy(from: a)
    try patch.withUnsafeBytes { try DeltaCodec.decode($0, into: b.pointer, count: n, mode: .subtract) }
    // Version blobs are header ‖ parameters (a safetensors file in real use; any fixed header here).
    let header = Array("HEADER-OF-THIS-MODEL-".utf8)
    let blob = { (f: FloatBuffer) in header + Array(UnsafeRawBufferPointer(start: f.pointer, count: n * 4)) }
    let (hashA, hashB) = (VersionCopy.hash(header: header, parameters: a), VersionCopy.hash(header: header, parameters: b))
    #expect(hashA == Sodium.blake2b(blob(a)) && hashB == Sodium.blake2b(blob(b)))
    for f in [a, b] { try server.blobs.publish(path: try blob(f).withUnsafeBytes { try write($0, dir) }) }
    let patchHash = try server.blobs.publish(path: try patch.withUnsafeBytes { try write($0, dir) })
    let badHash = try server.blobs.publish(path: try badPatch.withUnsafeBytes { try write($0, dir) })

    let client = try Endpoint.client(connect: server.endpoint.boundEndpoint, serverKey: coord.card.curvePublic,
                                     keys: CurveKeys(publicKey: node.card.curvePublic, secretKey: node.curveSecret), context: context)
    defer { client.close() }
    let work = FloatBuffer(count: n)
    let zero = [UInt8](repeating: 0, count: 32)

    // First version: whole.
    let copy = VersionCopy(header: header, count: n)
    var s = try copy.sync(endpoint: client, target: hashA, patchFrom: zero, patchHash: zero, work: work)
    #expect(!s.viaPatch && s.bytesFetched == header.count + n * 4 && copy.hash == hashA && copy.base.array == a.array)
    // Holding A, the node takes the patch: a quarter of the bytes, the same bits as the coordinator's B.
    s = try copy.sync(endpoint: client, target: hashB, patchFrom: hashA, patchHash: patchHash, work: work)
    #expect(s.viaPatch && s.bytesFetched == patch.count && copy.hash == hashB && copy.base.array == b.array)
    #expect(Double(s.bytesFetched) < 0.26 * Double(n * 4))
    // Already there: nothing to fetch.
    s = try copy.sync(endpoint: client, target: hashB, patchFrom: hashA, patchHash: patchHash, work: work)
    #expect(s.bytesFetched == 0)

    // A patch that does not lead to the announced hash is discarded; the whole version is fetched instead.
    let other = VersionCopy(header: header, count: n)
    _ = try other.sync(endpoint: client, target: hashA, patchFrom: zero, patchHash: zero, work: work)
    s = try other.sync(endpoint: client, target: hashB, patchFrom: hashA, patchHash: badHash, work: work)
    #expect(!s.viaPatch && s.bytesFetched == badPatch.count + header.count + n * 4 && other.hash == hashB && other.base.array == b.array)

    // A version nobody serves: a typed error, and the copy keeps what it had.
    #expect(throws: TransferError.self) {
      _ = try other.sync(endpoint: client, target: [UInt8](repeating: 7, count: 32), patchFrom: zero, patchHash: zero, work: work)
    }
    #expect(other.hash == hashB && other.base.array == b.array)
    #expect(server.peak <= server.blobs.budget - 1 + BlobServer.maxCredit, "queued chunks stayed within the budget")
    #expect(server.blobs.queuedChunks == 0, "the closing FETCH released every chunk")
    // A blob whose header is another model's is refused and the copy stays as it was.
    let foreign = VersionCopy(header: Array("ANOTHER-MODEL-HEADER!".utf8), count: n)
    #expect(throws: TransferError.self) { _ = try foreign.sync(endpoint: client, target: hashA, patchFrom: zero, patchHash: zero, work: work) }
    #expect(foreign.hash.isEmpty)
  }

  /// Many nodes fetching at once: every one gets its bytes, and the server never queues more than its budget.
  @Test func concurrentFetchesShareTheChunkBudget() throws {
    let dir = NSTemporaryDirectory() + "agora-budget-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let context = ZMQContext(ioThreads: 1)
    let coord = try Identity.generate(in: dir + "/c", name: "c", institution: "c", contact: "", coordinator: true)
    let server = Server(try Endpoint.server(bind: "tcp://127.0.0.1:*", keys: CurveKeys(publicKey: coord.card.curvePublic, secretKey: coord.curveSecret), context: context))
    defer { server.finish() }
    let blob = (0..<1_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }
    let hash = try server.blobs.publish(path: try blob.withUnsafeBytes { try write($0, dir) })
    let results = ResultBox()
    DispatchQueue.concurrentPerform(iterations: 6) { i in
      do {
        let id = try Identity.generate(in: dir + "/n\(i)", name: "n\(i)", institution: "n", contact: "", coordinator: false)
        let c = try Endpoint.client(connect: server.endpoint.boundEndpoint, serverKey: coord.card.curvePublic,
                                    keys: CurveKeys(publicKey: id.card.curvePublic, secretKey: id.curveSecret), context: context)
        defer { c.close() }
        var got: [UInt8] = []
        _ = try BlobFetcher(endpoint: c).fetch(hash: hash) { got += $0 }
        results.add(got == blob)
      } catch {
        results.add(false)
      }
    }
    #expect(results.values == [Bool](repeating: true, count: 6))
    #expect(server.peak >= 1 && server.peak <= server.blobs.budget - 1 + BlobServer.maxCredit, "peak \(server.peak)")
  }
}

final class ResultBox: @unchecked Sendable {
  private let lock = NSLock()
  private var v: [Bool] = []
  func add(_ b: Bool) { lock.lock(); v.append(b); lock.unlock() }
  var values: [Bool] { lock.lock(); defer { lock.unlock() }; return v }

  /// The coordinator hashes a new version while its slices are being finished: handed over in uneven
  /// steps, the trailing hash is the whole version's hash; stopped early, it is nil, not a wrong hash.
  @Test func trailingHashIsTheVersionHash() throws {
    let header: [UInt8] = Array("{\"a\":1}".utf8)
    let p = FloatBuffer((0..<300_001).map { Float($0 % 977) * 1e-3 })
    let t = VersionCopy.Trailing(header: header, parameters: p)
    for upTo in [0, 5, 70_000, 70_000, 250_123, 300_001] { t.advance(to: upTo) }
    #expect(t.finish() == VersionCopy.hash(header: header, parameters: p))
    let early = VersionCopy.Trailing(header: header, parameters: p)
    early.advance(to: 1000)
    #expect(early.finish() == nil)
  }
}
