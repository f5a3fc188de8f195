import AgoraCrypto
@testable import AgoraSecureAggregation
import AgoraWire
import Foundation
import Testing

/// A federation of `n` members with enrolled signing keys, for in-process rounds.
struct Members {
  let federation = "test-secagg"
  let keys: [(publicKey: [UInt8], secretKey: [UInt8])]
  var ids: [[UInt8]] { keys.map { Envelope.fingerprint($0.publicKey) } }
  init(_ n: Int) throws { keys = try (0..<n).map { _ in try Sodium.signKeypair() } }
  func signPublic(_ id: [UInt8]) -> [UInt8]? { keys.first { Envelope.fingerprint($0.publicKey) == id }?.publicKey }
}

/// Where a node stops taking part.
enum Dropout { case none, beforeAdvertising, beforeSharing, beforeSending, beforeUnmasking }

/// One round through every step, in process: returns the unmasked sum and the plaintext sum over the nodes
/// whose update is in it.
func secureRound(members m: Members, parameters: SecureAggregationParameters = .init(), count: Int, bits: Int,
                 dropouts: [Int: Dropout] = [:], round: UInt64 = 7) throws -> (unmasked: [UInt32], expected: [UInt32], senders: Int) {
  let n = m.keys.count
  let codec = try RingCodec(bits: bits)
  let coord = SecureAggregationCoordinator(federation: m.federation, round: round, parameters: parameters)
  var nodes: [Int: SecureAggregationNode] = [:]
  for i in 0..<n where dropouts[i] != .beforeAdvertising {
    let node = try SecureAggregationNode(federation: m.federation, round: round, node: m.ids[i], signSecretKey: m.keys[i].secretKey)
    try coord.advertise(node.advertisement, signPublic: m.keys[i].publicKey)
    nodes[i] = node
  }
  let roster = try coord.closeRoster()
  for (i, node) in nodes where dropouts[i] != .beforeSharing {
    try coord.takeShares(from: node.node, try node.accept(roster: roster, signPublic: m.signPublic))
  }
  let stream = try MaskStream(ringBits: bits)  // 8- or 16-bit keystream words for rings of up to 8 or 16 bits
  var sum = [UInt32](repeating: 0, count: count)
  var expected = [UInt32](repeating: 0, count: count)
  var senders = 0
  for (i, node) in nodes.sorted(by: { $0.key < $1.key }) where dropouts[i] != .beforeSharing {
    try node.receive(shares: coord.shares(for: node.node))
    guard dropouts[i] != .beforeSending else { continue }
    // Values within ±2^(b−1)/n so the plaintext sum fits the ring.
    let limit = Int64(1) << Int64(bits - 1) / Int64(n + 1)
    var v = (0..<count).map { _ in UInt32(bitPattern: Int32(truncatingIfNeeded: Int64.random(in: -limit...limit))) }
    for k in 0..<count { expected[k] &+= v[k] }
    try v.withUnsafeMutableBufferPointer { try node.mask($0, stream: stream) }
    var packed = [UInt8](repeating: 0, count: codec.packedBytes(count: count))
    v.withUnsafeBufferPointer { vb in packed.withUnsafeMutableBytes { codec.pack(vb, into: $0) } }
    try packed.withUnsafeBytes { pb in try sum.withUnsafeMutableBufferPointer { try codec.addPacked(pb, into: $0) } }
    try coord.sent(node.node)
    senders += 1
  }
  for (i, node) in nodes.sorted(by: { $0.key < $1.key }) where dropouts[i] == nil || dropouts[i] == Dropout.none {
    let req = try coord.request(for: node.node)
    try coord.takeReveals(from: node.node, try node.reveal(survivors: req.survivors, dropped: req.dropped))
  }
  try sum.withUnsafeMutableBufferPointer { try coord.unmask($0, stream: stream) }
  return (sum.map { $0 & codec.mask }, expected.map { $0 & codec.mask }, senders)
}

/// A round through the share exchange (steps 1–3), every member taking part.
func sharedRound(_ m: Members, round: UInt64) throws -> (coordinator: SecureAggregationCoordinator, nodes: [SecureAggregationNode], roster: Roster) {
  let coord = SecureAggregationCoordinator(federation: m.federation, round: round, parameters: .init())
  let nodes = try (0..<m.keys.count).map { try SecureAggregationNode(federation: m.federation, round: round, node: m.ids[$0], signSecretKey: m.keys[$0].secretKey) }
  for (i, n) in nodes.enumerated() { try coord.advertise(n.advertisement, signPublic: m.keys[i].publicKey) }
  let roster = try coord.closeRoster()
  for n in nodes { try coord.takeShares(from: n.node, try n.accept(roster: roster, signPublic: m.signPublic)) }
  for n in nodes { try n.receive(shares: coord.shares(for: n.node)) }
  return (coord, nodes, roster)
}

@Suite struct ShamirTests {
  @Test func anyThresholdOfSharesGivesTheSecretBack() throws {
    let secret = Sodium.randomBytes(32)
    for (t, n) in [(1, 1), (1, 3), (2, 2), (3, 5), (5, 9), (11, 16)] {
      let shares = try Shamir.split(secret, threshold: t, points: (1...n).map { UInt8($0) })
      for _ in 0..<5 {
        let pick = Array(shares.shuffled().prefix(t))
        #expect(try Shamir.combine(pick, threshold: t) == secret, "t = \(t) of n = \(n)")
      }
    }
    // Points anywhere in 1…255.
    let far = try Shamir.split(secret, threshold: 3, points: [255, 128, 7, 200])
    #expect(try Shamir.combine([far[3], far[0], far[2]], threshold: 3) == secret)
  }

  /// Fewer than t shares say nothing: for t = 2, one share is the secret plus a uniform random octet times x, so
  /// over many splits each value of a share's octet is equally likely whatever the secret.
  @Test func fewerThanThresholdSharesAreUniform() throws {
    var counts = [Int](repeating: 0, count: 256)
    for _ in 0..<25_600 { counts[Int(try Shamir.split([0x00], threshold: 2, points: [3, 9])[0].bytes[0])] += 1 }
    let chi2 = counts.reduce(0.0) { $0 + pow(Double($1) - 100, 2) / 100 }
    #expect(chi2 < 400, "χ² = \(chi2) with 255 degrees of freedom")  // p ≈ 1e-7
    // And combining t − 1 shares as if t were one less does not give the secret (beyond chance).
    let secret = Sodium.randomBytes(32)
    let shares = try Shamir.split(secret, threshold: 3, points: [1, 2, 3])
    #expect(try Shamir.combine(Array(shares.prefix(2)), threshold: 2) != secret)
  }

  @Test func badArgumentsAreTypedErrors() throws {
    #expect(throws: Shamir.Failure.threshold(4, points: 3)) { try Shamir.split([1], threshold: 4, points: [1, 2, 3]) }
    #expect(throws: Shamir.Failure.point(0)) { try Shamir.split([1], threshold: 1, points: [0]) }
    #expect(throws: Shamir.Failure.duplicatePoint(2)) { try Shamir.split([1], threshold: 1, points: [2, 2]) }
    let s = try Shamir.split([1, 2], threshold: 2, points: [1, 2])
    #expect(throws: Shamir.Failure.tooFew(got: 1, threshold: 2)) { try Shamir.combine([s[0]], threshold: 2) }
    #expect(throws: Shamir.Failure.duplicatePoint(1)) { try Shamir.combine([s[0], s[0]], threshold: 2) }
  }

  @Test func fieldArithmetic() {
    // 0x57 · 0x83 = 0xC1 (FIPS-197 §4.2); every nonzero element has an inverse.
    #expect(Shamir.mul(0x57, 0x83) == 0xC1)
    for a in 1...255 { #expect(Shamir.mul(UInt8(a), Shamir.inverse(UInt8(a))) == 1) }
  }
}

@Suite struct RingCodecTests {
  /// A ring sized for per-node bits: the smallest width whose quantum rule leaves each of n equal nodes the levels
  /// of a signed p-bit integer.
  @Test func aRingGrowsWithTheNodesToKeepEachNodesBits() throws {
    #expect(RingCodec.bits(nodeBits: 4, nodes: 4) == 7)
    #expect(RingCodec.bits(nodeBits: 4, nodes: 16) == 9)
    #expect(RingCodec.bits(nodeBits: 4, nodes: 64) == 11)
    // The default, 3 bits per node: a ring no wider than int8 up to 16 nodes.
    #expect([4, 16, 64].map { RingCodec.bits(nodeBits: 3, nodes: $0) } == [6, 8, 10])
    #expect(RingCodec.bits(nodeBits: 8, nodes: 16) == 13)
    #expect(RingCodec.bits(nodeBits: 24, nodes: 255) == 32)
    for p in 2...20 {
      for n in [1, 2, 3, 5, 16, 100, 255] {
        let b = RingCodec.bits(nodeBits: p, nodes: n)
        func perNode(_ b: Int) -> Int64 { ((Int64(1) << Int64(b - 1)) - 1 - Int64(n)) / Int64(n) }
        #expect(perNode(b) >= (Int64(1) << Int64(p - 1)) - 1 && perNode(b - 1) < (Int64(1) << Int64(p - 1)) - 1, "p \(p), n \(n): \(b)")
        let c = try RingCodec(bits: b)
        #expect(try c.quantum(range: 1, nodes: n) > 0)
      }
    }
  }

  @Test func packedValuesComeBackForEveryWidth() throws {
    for bits in 2...32 {
     for count in [1000 + bits, 1, 2, 3, 5, 6, 7, 9, 11] {  // every tail of the wide loops
      let c = try RingCodec(bits: bits)
      let v = (0..<count).map { _ in UInt32.random(in: 0...UInt32.max) & c.mask }
      var packed = [UInt8](repeating: 0xAA, count: c.packedBytes(count: count))
      v.withUnsafeBufferPointer { vb in packed.withUnsafeMutableBytes { c.pack(vb, into: $0) } }
      var back = [UInt32](repeating: 0, count: count)
      try packed.withUnsafeBytes { pb in try back.withUnsafeMutableBufferPointer { try c.addPacked(pb, into: $0) } }
      #expect(back == v, "\(bits) bits, \(count) values")
      #expect(packed.count == (count * bits + 7) / 8)
     }
    }
    let c = try RingCodec(bits: 12)
    var sum = [UInt32](repeating: 0, count: 10)
    #expect(throws: SecureAggregationError.self) { try [UInt8](repeating: 0, count: 16).withUnsafeBytes { pb in try sum.withUnsafeMutableBufferPointer { try c.addPacked(pb, into: $0) } } }
    #expect(throws: SecureAggregationError.self) { try RingCodec(bits: 33) }
  }

  /// The weighted mean of the nodes' updates comes back from the ring sum to within the quantum, and what the
  /// encoding drops stays in each node's error feedback exactly.
  @Test func fixedPointEncodingCarriesTheWeightedMeanAndKeepsTheRest() throws {
    let c = try RingCodec(bits: 14)
    let n = 4, count = 5000, range: Float = 0.02
    let u = try c.quantum(range: range, nodes: n)
    let weights: [Float] = [0.4, 0.3, 0.2, 0.1]
    var sum = [UInt32](repeating: 0, count: count)
    var exact = [Double](repeating: 0, count: count)
    var rng = SplitMix(seed: 42)
    for k in 0..<n {
      let x = (0..<count).map { _ in Float.random(in: -0.03...0.03) }  // some beyond the range: clipped, kept
      var residual = x
      var q = [UInt32](repeating: 0, count: count)
      residual.withUnsafeMutableBufferPointer { r in q.withUnsafeMutableBufferPointer { RingCodec.encode(r, factor: weights[k], range: range, quantum: u, into: $0, random: &rng) } }
      for i in 0..<count {
        let carried = Float(c.signed(q[i])) * u / weights[k]
        #expect(abs(carried + residual[i] - x[i]) <= 1e-6, "x = carried + feedback")
        exact[i] += Double(weights[k]) * Double(min(max(x[i], -range), range))
        sum[i] &+= q[i]
      }
    }
    var worst = 0.0
    for i in 0..<count { worst = max(worst, abs(Double(c.signed(sum[i])) * Double(u) - exact[i])) }
    #expect(worst <= Double(n) * Double(u), "within n quanta of the exact weighted sum: \(worst) vs quantum \(u)")
  }

  /// Encoding in pieces (each told its first index) equals encoding whole; the rounding is unbiased (the mean
  /// of many encodings of one value is that value); NaN is encoded as 0; the branch-free loop of narrow rings
  /// and the checked loop of wide ones agree on what they carry.
  @Test func encodingInPiecesIsUnbiasedAndNaNIsZero() throws {
    for bits in [12, 26] {
      let c = try RingCodec(bits: bits)
      let count = 40_000, range: Float = 0.05
      let u = try c.quantum(range: range, nodes: 3)
      let x = (0..<count).map { i in i == 17 ? Float.nan : Float(i % 97) * 0.0013 - 0.06 }
      var a = x, b = x
      var qa = [UInt32](repeating: 0, count: count), qb = qa
      a.withUnsafeMutableBufferPointer { r in qa.withUnsafeMutableBufferPointer { RingCodec.encode(r, factor: 0.5, range: range, quantum: u, seed: 99, into: $0) } }
      b.withUnsafeMutableBufferPointer { r in
        qb.withUnsafeMutableBufferPointer { q in
          for lo in stride(from: 0, to: count, by: 7_001) {
            let hi = min(count, lo + 7_001)
            RingCodec.encode(UnsafeMutableBufferPointer(rebasing: r[lo..<hi]), factor: 0.5, range: range, quantum: u, seed: 99, first: lo,
                             into: UnsafeMutableBufferPointer(rebasing: q[lo..<hi]))
          }
        }
      }
      #expect(qa == qb && a.elementsEqual(b, by: { $0 == $1 || ($0.isNaN && $1.isNaN) }), "\(bits) bits")
      #expect(qa[17] == 0 && a[17] == 0, "NaN encodes as 0 and leaves no NaN behind")
      // Unbiased: the value 0.3 quanta, many times with different seeds, averages 0.3 quanta (±4 σ).
      let trials = 20_000
      var ones = 0
      var v = [Float](repeating: 0.3 * u / 0.5, count: trials), q = [UInt32](repeating: 0, count: trials)
      v.withUnsafeMutableBufferPointer { r in q.withUnsafeMutableBufferPointer { RingCodec.encode(r, factor: 0.5, range: range, quantum: u, seed: 5, into: $0) } }
      for w in q { ones += Int(c.signed(w)) }
      let sigma = (0.3 * 0.7 / Double(trials)).squareRoot()
      #expect(abs(Double(ones) / Double(trials) - 0.3) < 4 * sigma, "\(bits) bits: mean \(Double(ones) / Double(trials))")
    }
  }
}

@Suite struct SecureAggregationProtocolTests {
  /// A vector masked piece by piece (each piece told where it starts) gets the words it gets whole, with either
  /// keystream width; a piece that does not start on a slice is refused.
  @Test func maskingInPiecesEqualsMaskingWhole() throws {
    let seeds: [(seed: [UInt8], subtract: Bool)] = [(Array(repeating: 7, count: 32), false), (Array(repeating: 9, count: 32), true)]
    let count = 3 * MaskStream.words + 123
    for bits in [5, 8, 9, 12, 16, 17, 32] {
      let stream = try MaskStream(threads: 2, ringBits: bits)
      #expect(stream.wordBits == (bits <= 8 ? 8 : (bits <= 16 ? 16 : 32)))
      var whole = [UInt32](repeating: 5, count: count)
      try whole.withUnsafeMutableBufferPointer { try stream.apply(seeds, to: $0) }
      var pieces = [UInt32](repeating: 5, count: count)
      try pieces.withUnsafeMutableBufferPointer { v in
        for a in stride(from: 0, to: count, by: 2 * MaskStream.words) {
          try stream.apply(seeds, to: UnsafeMutableBufferPointer(rebasing: v[a..<min(count, a + 2 * MaskStream.words)]), first: a)
        }
      }
      #expect(pieces == whole, "\(bits) bits")
      // One added mask on zeros: the keystream's words themselves.
      var one = [UInt32](repeating: 0, count: 4096)
      try one.withUnsafeMutableBufferPointer { try stream.apply(seed: seeds[0].seed, to: $0) }
      #expect(one.contains { $0 >> 16 != 0 } == (bits > 16), "\(bits) bits: words of \(stream.wordBits) bits")
      #expect(one.contains { $0 >> 8 != 0 } == (bits > 8), "\(bits) bits: words of \(stream.wordBits) bits")
      #expect(throws: SodiumError.self) { try pieces.withUnsafeMutableBufferPointer { try stream.apply(seeds, to: $0, first: 8) } }
    }
  }

  @Test func theUnmaskedSumIsThePlaintextSumExactly() throws {
    for (n, bits) in [(2, 16), (5, 12), (9, 32), (4, 8), (3, 5)] {
      let r = try secureRound(members: try Members(n), count: 3001, bits: bits)
      #expect(r.senders == n && r.unmasked == r.expected, "n = \(n), \(bits) bits")
    }
  }

  /// Dropouts at each phase: before advertising (not in the roster), before sharing (nobody masks with it),
  /// after sharing but before sending (its pairwise masks are rebuilt from its mask key), after sending but
  /// before unmasking (its self-mask is rebuilt from its neighbours' shares). The sum is exactly the senders'.
  @Test func dropoutsAtEveryPhaseStillGiveTheExactSum() throws {
    let m = try Members(7)
    for d in [Dropout.beforeAdvertising, .beforeSharing, .beforeSending, .beforeUnmasking] {
      let r = try secureRound(members: m, count: 2000, bits: 20, dropouts: [2: d])
      #expect(r.unmasked == r.expected, "\(d)")
      #expect(r.senders == (d == .beforeUnmasking ? 7 : 6), "\(d)")
    }
    // Two at once (k = 6, t = 4: every node keeps four neighbours to answer for it).
    let r = try secureRound(members: m, count: 2000, bits: 20, dropouts: [0: .beforeSending, 3: .beforeUnmasking])
    #expect(r.unmasked == r.expected && r.senders == 6)
    // A third is one too many: fewer than t shares for some node, and the round says whose.
    #expect(throws: SecureAggregationError.self) {
      try secureRound(members: m, count: 10, bits: 20, dropouts: [0: .beforeSending, 3: .beforeUnmasking, 5: .beforeSharing])
    }
  }

  /// 40 nodes with sparse neighbourhoods (SecAgg+: k = 12 of 39) and dropouts after masking.
  @Test func sparseNeighbourhoodsSumExactly() throws {
    let m = try Members(40)
    let p = SecureAggregationParameters()
    #expect(p.degree(participants: 40) == 12 && p.threshold(participants: 40) == 8)
    let r = try secureRound(members: m, parameters: p, count: 500, bits: 24, dropouts: [1: .beforeSending, 17: .beforeSending, 30: .beforeUnmasking])
    #expect(r.unmasked == r.expected && r.senders == 38)
  }

  /// Too many dropouts among a node's neighbours: unmasking fails with a clear error (the round is abandoned).
  @Test func tooManyDropoutsIsAClearError() throws {
    let m = try Members(4)  // k = 3, t = 2
    #expect(throws: SecureAggregationError.self) {
      try secureRound(members: m, count: 100, bits: 16, dropouts: [0: .beforeUnmasking, 1: .beforeUnmasking, 2: .beforeUnmasking])
    }
  }

  /// One masked update is indistinguishable from uniform — and stays so with any one mask left alone, so a
  /// test of each mask by itself fails when that mask is skipped.
  @Test(arguments: [32, 12, 8]) func aMaskedUpdateLooksUniformAndEveryMaskCounts(ringBits: Int) throws {
    let m = try Members(3)
    let (_, nodes, roster) = try sharedRound(m, round: 1)
    let stream = try MaskStream(ringBits: ringBits)
    let count = 1 << 16
    // χ² over the low octets a mask covers (two, or one with an 8-bit ring's 8-bit words): uniform either way.
    let octets = ringBits > 8 ? 2 : 1
    func chi2(_ v: [UInt32]) -> Double {
      var h = [Int](repeating: 0, count: 256)
      for x in v { for k in 0..<octets { h[Int((x >> (8 * UInt32(k))) & 0xFF)] += 1 } }
      let e = Double(octets * count) / 256
      return h.reduce(0.0) { $0 + pow(Double($1) - e, 2) / e }
    }
    // The whole masked update of zeros.
    var v = [UInt32](repeating: 0, count: count)
    try v.withUnsafeMutableBufferPointer { try nodes[0].mask($0, stream: stream) }
    #expect(chi2(v) < 400, "masked zeros: χ² = \(chi2(v))")
    // Each mask alone: take the others off again.
    let me = nodes[0]
    var seeds: [(seed: [UInt8], subtract: Bool)] = [(try MaskSeeds.selfMask(me.b), false)]
    for j in me.maskingWith {
      let o = roster.participants[j]
      seeds.append((try MaskSeeds.pairwise(federation: m.federation, round: 1, agreement: try Sodium.agree(secretKey: me.s.secretKey, publicKey: o.sPublic),
                                          a: me.node, b: o.node), !me.node.lexicographicallyPrecedes(o.node)))
    }
    #expect(seeds.count == 3, "a self-mask and two pairwise masks")
    for keep in seeds.indices {
      var w = v
      for (k, s) in seeds.enumerated() where k != keep { try w.withUnsafeMutableBufferPointer { try stream.apply(seed: s.seed, to: $0, subtract: !s.subtract) } }
      #expect(chi2(w) < 400, "mask \(keep) alone: χ² = \(chi2(w))")
      #expect(w != [UInt32](repeating: 0, count: count))
    }
    // All taken off: zeros again (the masks are exactly what was added).
    var z = v
    for s in seeds { try z.withUnsafeMutableBufferPointer { try stream.apply(seed: s.seed, to: $0, subtract: !s.subtract) } }
    #expect(z == [UInt32](repeating: 0, count: count))
  }

  /// An honest node answers one unmasking request per round and never reveals both kinds of share of a node.
  @Test func aCoordinatorAskingForBothSharesOfANodeIsRefused() throws {
    let m = try Members(4)
    let (_, nodes, roster) = try sharedRound(m, round: 2)
    let others = (1..<4).map { m.ids[$0] }.filter { roster.index[$0] != nil }
    let ask = nodes.first { $0.node == m.ids[0] }!
    #expect(throws: SecureAggregationError.self) { try ask.reveal(survivors: others, dropped: [others[0]]) }
    // An honest request is answered once; asking again for the other kind is refused.
    let first = try ask.reveal(survivors: others, dropped: [])
    #expect(first.count == 3 && first.allSatisfy { $0.kind == .selfMask })
    #expect(throws: SecureAggregationError.self) { try ask.reveal(survivors: [], dropped: others) }
  }

  /// A coordinator that substitutes a node's keys (or a stranger's advertisement) is caught by every node.
  @Test func substitutedKeysAreRefusedByNodes() throws {
    let m = try Members(3)
    let nodes = try (0..<3).map { try SecureAggregationNode(federation: m.federation, round: 3, node: m.ids[$0], signSecretKey: m.keys[$0].secretKey) }
    var ads = nodes.map(\.advertisement)
    ads[1].sPublic = try Sodium.boxKeypair().publicKey  // the coordinator's own key in place of node 1's
    let roster = try Roster(federation: m.federation, round: 3, parameters: .init(), participants: ads)
    #expect(throws: SecureAggregationError.signature(node: String(hex(m.ids[1]).prefix(12)))) { try nodes[0].accept(roster: roster, signPublic: m.signPublic) }
    // A stranger (no enrolled key) in the roster.
    let stranger = try Sodium.signKeypair()
    let s = try SecureAggregationNode(federation: m.federation, round: 3, node: Envelope.fingerprint(stranger.publicKey), signSecretKey: stranger.secretKey)
    let r2 = try Roster(federation: m.federation, round: 3, parameters: .init(), participants: nodes.map(\.advertisement) + [s.advertisement])
    #expect(throws: SecureAggregationError.self) { try nodes[2].accept(roster: r2, signPublic: m.signPublic) }
    // The coordinator checks signatures too.
    let coord = SecureAggregationCoordinator(federation: m.federation, round: 3, parameters: .init())
    #expect(throws: SecureAggregationError.self) { try coord.advertise(ads[1], signPublic: m.keys[1].publicKey) }
    // A roster for another round.
    let r3 = try Roster(federation: m.federation, round: 4, parameters: .init(), participants: nodes.map(\.advertisement))
    #expect(throws: SecureAggregationError.self) { try nodes[0].accept(roster: r3, signPublic: m.signPublic) }
  }

  /// A neighbour that reveals a wrong share: the coordinator rebuilds from other shares (the commitment picks
  /// the right secret), or says whose secret it cannot rebuild.
  @Test func aBadRevealedShareIsDetectedByTheCommitment() throws {
    let m = try Members(5)  // k = 4, t = 3: four shares of each, one can be bad
    let (coord, nodes, roster) = try sharedRound(m, round: 9)
    let stream = try MaskStream()
    var sum = [UInt32](repeating: 0, count: 64)
    for n in nodes {
      var v = [UInt32](repeating: 1, count: 64)
      try v.withUnsafeMutableBufferPointer { try n.mask($0, stream: stream) }
      for i in 0..<64 { sum[i] &+= v[i] }
      try coord.sent(n.node)
    }
    for (k, n) in nodes.enumerated() {
      let req = try coord.request(for: n.node)
      var rev = try n.reveal(survivors: req.survivors, dropped: req.dropped)
      if k == 0 { rev[0].share.bytes[5] ^= 0x40 }  // one corrupted share
      try coord.takeReveals(from: n.node, rev)
    }
    try sum.withUnsafeMutableBufferPointer { try coord.unmask($0, stream: stream) }
    #expect(sum == [UInt32](repeating: 5, count: 64))
  }
}

@Suite struct PrivacyAccountantTests {
  /// ε against Opacus 1.6's RDP accountant (`compute_rdp` + `get_privacy_spent`, the same orders; for q < 1 the
  /// integer orders 2 … 63, which this accountant uses there). Reference values computed with
  /// `scripts/dp_reference.py`.
  @Test func epsilonMatchesOpacus() {
    for (q, z, t, delta, want) in [(1.0, 1.0, 10, 1e-5, 19.05359753163139), (1.0, 0.5, 100, 1e-5, 294.8612600716533),
                                   (1.0, 4.0, 500, 1e-5, 40.97049328386881), (0.1, 1.1, 1000, 1e-5, 22.89658105071251),
                                   (0.01, 1.0, 10000, 1e-5, 6.719402117939217), (0.5, 2.0, 100, 1e-5, 15.804010815805235)] {
      var acc = PrivacyAccountant()
      for _ in 0..<t { acc.add(q: q, z: z) }
      let got = acc.epsilon(delta: delta).epsilon
      #expect(abs(got - want) / want < 1e-6, "q \(q), z \(z), \(t) rounds: \(got) vs Opacus \(want)")
    }
    // Rounds with different noise compose: 5 at z = 1, then 5 at z = 2, δ = 1e-6.
    var acc = PrivacyAccountant()
    for _ in 0..<5 { acc.add(z: 1) }
    for _ in 0..<5 { acc.add(z: 2) }
    #expect(abs(acc.epsilon(delta: 1e-6).epsilon - 15.32798402653992) < 1e-6)
    #expect(PrivacyAccountant().epsilon(delta: 1e-6).epsilon == 0)
    var none = PrivacyAccountant()
    none.add(z: 0)
    #expect(none.epsilon(delta: 1e-6).epsilon == .infinity)
  }
}

@Suite struct SecureAggregationVectorTests {
  /// Protocol/vectors/secagg.json is what the code writes (regenerate with `agora protocol vectors`), and an
  /// outside reader's checks hold: both sides of the pair agree, the packed octets decode to the values.
  @Test func theVectorFileIsWhatTheCodeWrites() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    let text = try String(contentsOfFile: root + "/Protocol/vectors/secagg.json", encoding: .utf8)
    #expect(text == (try SecureAggregationVectors.json()))
    let j = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
    let su = try Sodium.boxKeypair(seed: SecureAggregationVectors.bytes(0x30)), sv = try Sodium.boxKeypair(seed: SecureAggregationVectors.bytes(0x40))
    #expect(hex(try Sodium.agree(secretKey: sv.secretKey, publicKey: su.publicKey)) == j["agreement"] as? String, "X25519 is symmetric")
    let codec = try RingCodec(bits: 12)
    let packed = (j["ring_packed"] as! String).utf8.count / 2
    #expect(packed == codec.packedBytes(count: (j["ring_values"] as! [Int]).count))
    #expect(j["roster_degree"] as? Int == 10 && j["roster_threshold"] as? Int == 7)
  }
}
