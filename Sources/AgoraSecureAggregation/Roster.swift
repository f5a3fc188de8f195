import AgoraCrypto
import AgoraWire

/// Errors of secure aggregation, each naming the party and the step.
public enum SecureAggregationError: Error, Equatable, CustomStringConvertible {
  case signature(node: String)
  case unknownNode(String)
  case roster(String)
  case share(String)
  case unmask(String)
  case tooFewShares(node: String, got: Int, threshold: Int)
  case parameters(String)

  public var description: String {
    switch self {
    case .signature(let n): return "secure aggregation: the key advertisement of \(n) is not signed by its enrolled identity"
    case .unknownNode(let n): return "secure aggregation: \(n) is not a member of the federation"
    case .roster(let s): return "secure aggregation: roster refused: \(s)"
    case .share(let s): return "secure aggregation: share refused: \(s)"
    case .unmask(let s): return "secure aggregation: unmasking refused: \(s)"
    case .tooFewShares(let n, let got, let t): return "secure aggregation: \(got) shares for \(n), \(t) needed (too many dropouts among its neighbours)"
    case .parameters(let s): return "secure aggregation: \(s)"
    }
  }
}

func short(_ id: [UInt8]) -> String { String(hex(id).prefix(12)) }

/// What a node announces for one round (SecAgg's AdvertiseKeys): two fresh X25519 public keys — `cPublic` to
/// encrypt the shares others send it, `sPublic` to agree pairwise masks — and a commitment to its self-mask
/// seed, signed with its enrolled Ed25519 identity so that the coordinator cannot substitute them.
public struct Advertisement: Equatable, Sendable {
  public var node: [UInt8]
  public var cPublic: [UInt8]
  public var sPublic: [UInt8]
  public var selfMaskCommitment: [UInt8]
  public var signature: [UInt8]

  public init(node: [UInt8], cPublic: [UInt8], sPublic: [UInt8], selfMaskCommitment: [UInt8], signature: [UInt8]) {
    self.node = node
    self.cPublic = cPublic
    self.sPublic = sPublic
    self.selfMaskCommitment = selfMaskCommitment
    self.signature = signature
  }

  /// The octets signed: "AGORA-SECAGG-KEYS-v1" ‖ u16 length ‖ federation ‖ u64 round ‖ node ‖ c ‖ s ‖ commitment.
  public static func statement(federation: String, round: UInt64, node: [UInt8], cPublic: [UInt8], sPublic: [UInt8], commitment: [UInt8]) -> [UInt8] {
    let f = Array(federation.utf8)
    var out = Array("AGORA-SECAGG-KEYS-v1".utf8)
    out += [UInt8(f.count >> 8), UInt8(f.count & 0xFF)] + f
    for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: round >> (8 * i))) }
    return out + node + cPublic + sPublic + commitment
  }

  public func statement(federation: String, round: UInt64) -> [UInt8] {
    Advertisement.statement(federation: federation, round: round, node: node, cPublic: cPublic, sPublic: sPublic, commitment: selfMaskCommitment)
  }

  /// Checks the signature against the member's enrolled signing key, whose fingerprint must be `node`.
  public func verify(federation: String, round: UInt64, signPublic: [UInt8]) throws {
    guard Envelope.fingerprint(signPublic) == node else { throw SecureAggregationError.unknownNode(short(node)) }
    guard cPublic.count == 32, sPublic.count == 32, selfMaskCommitment.count == 32,
          Sodium.verify(signature, message: statement(federation: federation, round: round), publicKey: signPublic) else {
      throw SecureAggregationError.signature(node: short(node))
    }
  }
}

/// How sparse the masks are and how many shares unmask a node.
public struct SecureAggregationParameters: Equatable, Sendable {
  /// Neighbours per node (k); 0: every other node up to 8 participants, 2⌈log2 n⌉ beyond (SecAgg+: masking and
  /// sharing cost grow with k, not n).
  public var neighbours: Int
  /// Shares needed to reconstruct a node's secrets, as a fraction of its neighbours (at least ⌊k/2⌋ + 1, so
  /// that a coordinator cannot gather enough of both kinds for one node).
  public var thresholdFraction: Double
  /// The fraction in thousandths, as SA_ROSTER carries it: what t is computed from (integers, SPEC §7.2 step 2).
  public var thresholdPermille: Int { Int((thresholdFraction * 1000).rounded()) }

  /// The default fraction, 0.666 (666‰), gives t = ⌈2k/3⌉ for every k a roster can have (up to 254).
  public static let defaultThresholdFraction = 0.666

  public init(neighbours: Int = 0, thresholdFraction: Double = SecureAggregationParameters.defaultThresholdFraction) {
    self.neighbours = neighbours
    self.thresholdFraction = thresholdFraction
  }

  /// k for n participants.
  /// (An odd k below n − 1 is rounded up: the graph is a ring joined to k/2 on either side.)
  public func degree(participants n: Int) -> Int {
    guard n > 1 else { return 0 }
    var k: Int
    if neighbours > 0 {
      k = neighbours
    } else if n <= 8 {
      k = n - 1
    } else {
      var log = 0
      while (1 << log) < n { log += 1 }
      k = 2 * log
    }
    if k < n - 1 && k % 2 == 1 { k += 1 }
    return min(n - 1, k)
  }

  /// t for n participants.
  public func threshold(participants n: Int) -> Int {
    let k = degree(participants: n)
    guard k > 0 else { return 1 }
    // ⌈k · p / 1000⌉ in integers, so that every implementation gets the same t from SA_ROSTER's per mille.
    let t = (k * thresholdPermille + 999) / 1000
    return min(k, max(k / 2 + 1, t))
  }
}

/// The round's participants (those whose signed advertisements the coordinator forwards), in octet order of
/// their node ids, and the neighbour graph every party computes from it: a Harary graph (each node joined to
/// the ⌈k/2⌉ before and after it on a ring, complete when k = n − 1) over an order drawn from a hash of every
/// advertisement, so that the coordinator does not choose who masks with whom. A node's Shamir point is its
/// place in the roster + 1 (at most 255 participants).
public struct Roster: Sendable {
  public let federation: String
  public let round: UInt64
  public let parameters: SecureAggregationParameters
  public let participants: [Advertisement]
  public let index: [[UInt8]: Int]
  public let degree: Int
  public let threshold: Int
  /// neighbours[i]: indices of participant i's neighbours, ascending.
  public let neighbours: [[Int]]

  public init(federation: String, round: UInt64, parameters: SecureAggregationParameters, participants: [Advertisement]) throws {
    let sorted = participants.sorted { $0.node.lexicographicallyPrecedes($1.node) }
    guard sorted.count <= 255 else { throw SecureAggregationError.roster("\(sorted.count) participants; at most 255 per round") }
    var index: [[UInt8]: Int] = [:]
    for (i, a) in sorted.enumerated() {
      guard index.updateValue(i, forKey: a.node) == nil else { throw SecureAggregationError.roster("\(short(a.node)) advertised twice") }
    }
    self.federation = federation
    self.round = round
    self.parameters = parameters
    self.participants = sorted
    self.index = index
    let n = sorted.count
    degree = parameters.degree(participants: n)
    threshold = parameters.threshold(participants: n)
    // The ring order: participants sorted by a hash keyed with every advertisement's keys.
    var all = Array("AGORA-SECAGG-GRAPH-v1".utf8)
    for a in sorted { all += a.node + a.cPublic + a.sPublic + a.selfMaskCommitment }
    let seed = Sodium.blake2b(all)
    let ring = (0..<n).sorted { i, j in
      let a = (try? Sodium.keyedHash(sorted[i].node, key: seed)) ?? [], b = (try? Sodium.keyedHash(sorted[j].node, key: seed)) ?? []
      return a.lexicographicallyPrecedes(b)
    }
    var place = [Int](repeating: 0, count: n)
    for (p, i) in ring.enumerated() { place[i] = p }
    var nb = [[Int]](repeating: [], count: n)
    if degree >= n - 1 {
      for i in 0..<n { nb[i] = (0..<n).filter { $0 != i } }
    } else {
      // Harary graph H(k, n), k even: k/2 on either side along the ring.
      var sets = [Set<Int>](repeating: [], count: n)
      for i in 0..<n {
        for d in 1...(degree / 2) {
          let j = ring[(place[i] + d) % n]
          sets[i].insert(j)
          sets[j].insert(i)
        }
      }
      for i in 0..<n { nb[i] = sets[i].sorted() }
    }
    neighbours = nb
  }

  public func point(_ i: Int) -> UInt8 { UInt8(i + 1) }
}

/// The seeds masks are expanded from.
enum MaskSeeds {
  /// The pairwise seed of u and v (either side computes it): a keyed hash of their X25519 agreement.
  static func pairwise(federation: String, round: UInt64, agreement: [UInt8], a: [UInt8], b: [UInt8]) throws -> [UInt8] {
    let (lo, hi) = a.lexicographicallyPrecedes(b) ? (a, b) : (b, a)
    var m = Array("AGORA-SECAGG-MASK-v1".utf8) + Array(federation.utf8)
    for i in 0..<8 { m.append(UInt8(truncatingIfNeeded: round >> (8 * i))) }
    return try Sodium.keyedHash(m + lo + hi, key: agreement)
  }

  /// The self-mask's seed from the secret b.
  static func selfMask(_ b: [UInt8]) throws -> [UInt8] { try Sodium.keyedHash(Array("AGORA-SECAGG-SELF-v1".utf8), key: b) }

  /// The public commitment to b.
  static func commitment(_ b: [UInt8]) -> [UInt8] { Sodium.blake2b(Array("AGORA-SECAGG-COMMIT-v1".utf8) + b) }
}
