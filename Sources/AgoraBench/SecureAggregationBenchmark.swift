import AgoraCrypto
import AgoraSecureAggregation
import Foundation

/// The compute secure aggregation adds to a round, without transport: every node's masking and packing and
/// the coordinator's folding and unmasking of n updates of P parameters, in one process, one after another.
public struct SecureAggregationBenchmark {

  public var parameters: Int = 13_977_984
  public var nodes: Int = 16
  public var bits: Int = 12
  public var dropouts: Int = 1
  public var threads: Int = 1
  public var repetitions: Int = 3

  public init() {}

  public func run() throws {
    guard nodes >= 2, dropouts >= 0, dropouts < nodes - 1, parameters >= 1, repetitions >= 1 else {
      throw BenchError("need nodes ≥ 2, 0 ≤ dropouts < nodes − 1, parameters ≥ 1, repetitions ≥ 1")
    }
    let codec = try RingCodec(bits: bits)
    let fed = "bench"
    let keys = try (0..<nodes).map { _ in try Sodium.signKeypair() }
    let ids = keys.map { Envelope.fingerprint($0.publicKey) }
    let signPublic: ([UInt8]) -> [UInt8]? = { id in keys.first { Envelope.fingerprint($0.publicKey) == id }?.publicKey }
    let stream = try MaskStream(threads: threads, ringBits: bits)
    var v = [UInt32](repeating: 0, count: parameters)
    var sum = [UInt32](repeating: 0, count: parameters)
    var packed = [UInt8](repeating: 0, count: codec.packedBytes(count: parameters))
    var setup: [Double] = [], mask: [Double] = [], pack: [Double] = [], fold: [Double] = [], unmask: [Double] = [], encode: [Double] = []
    var x = [Float](repeating: 0, count: parameters)
    for i in 0..<parameters { x[i] = Float((i &* 2_654_435_761) % 2001 - 1000) * 1e-6 }
    func time(_ f: () throws -> Void) rethrows -> Double {
      let t0 = DispatchTime.now().uptimeNanoseconds
      try f()
      return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }
    var degree = 0, threshold = 0
    for rep in 0..<repetitions {
      let round = UInt64(rep + 1)
      let coord = SecureAggregationCoordinator(federation: fed, round: round, parameters: .init())
      var parties: [SecureAggregationNode] = []
      setup.append(try time {
        parties = try (0..<nodes).map { try SecureAggregationNode(federation: fed, round: round, node: ids[$0], signSecretKey: keys[$0].secretKey) }
        for (i, p) in parties.enumerated() { try coord.advertise(p.advertisement, signPublic: keys[i].publicKey) }
        let roster = try coord.closeRoster()
        degree = roster.degree
        threshold = roster.threshold
        for p in parties { try coord.takeShares(from: p.node, try p.accept(roster: roster, signPublic: signPublic)) }
        for p in parties { try p.receive(shares: coord.shares(for: p.node)) }
      } / Double(nodes))
      for i in 0..<parameters { sum[i] = 0 }
      var m = 0.0, pk = 0.0, fo = 0.0
      // The fixed-point encoding with stochastic rounding (one thread), timed once.
      let u = try codec.quantum(range: 0.02, nodes: nodes)
      encode.append(time {
        x.withUnsafeMutableBufferPointer { xb in
          v.withUnsafeMutableBufferPointer { RingCodec.encode(xb, factor: 1 / Float(nodes), range: 0.02, quantum: u, seed: UInt64(rep) &* 0x9E37_79B9_7F4A_7C15, into: $0) }
        }
      })
      for p in parties.dropLast(dropouts) {
        for i in 0..<parameters { v[i] = 0 }  // zeros: the unmasked sum must come back all zeros
        m += try time { try v.withUnsafeMutableBufferPointer { try p.mask($0, stream: stream) } }
        pk += time { v.withUnsafeBufferPointer { vb in packed.withUnsafeMutableBytes { codec.pack(vb, into: $0) } } }
        fo += try time { try packed.withUnsafeBytes { pb in try sum.withUnsafeMutableBufferPointer { try codec.addPacked(pb, into: $0) } } }
        try coord.sent(p.node)
      }
      let senders = Double(nodes - dropouts)
      mask.append(m / senders); pack.append(pk / senders); fold.append(fo / senders)
      for p in parties.dropLast(dropouts) {
        let req = try coord.request(for: p.node)
        try coord.takeReveals(from: p.node, try p.reveal(survivors: req.survivors, dropped: req.dropped))
      }
      unmask.append(try time { try sum.withUnsafeMutableBufferPointer { try coord.unmask($0, stream: stream) } })
      guard sum.allSatisfy({ $0 & codec.mask == 0 }) else { throw BenchError("the unmasked sum of zero updates is not zero") }
    }
    func med(_ x: [Double]) -> Double { x.sorted()[x.count / 2] }
    let mb = Double(parameters * stream.wordBits / 8) / 1e6
    print("secure aggregation, P = \(parameters), n = \(nodes) (k = \(degree) neighbours, t = \(threshold)), \(bits)-bit ring, \(dropouts) dropped after sharing, \(threads) thread(s); medians of \(repetitions)")
    print(String(format: "  node:        keys and shares %.1f ms; encoding %.0f ms; masks (%d × %.0f MB of AES-256-CTR) %.0f ms; packing %.0f ms → %.1f MB (int8: %.1f MB)",
                 med(setup) * 1000, med(encode) * 1000, degree + 1, mb, med(mask) * 1000, med(pack) * 1000, Double(packed.count) / 1e6, Double(parameters) / 1e6))
    print(String(format: "  coordinator: folding %.0f ms per update; unmasking %.0f ms (%d self-masks, %d pairwise masks of dropped nodes); the unmasked sum checked",
                 med(fold) * 1000, med(unmask) * 1000, nodes - dropouts, dropouts * degree))
  }
}
