import AgoraCrypto

/// A share sent from one node to a neighbour through the coordinator, in a box only the neighbour opens
/// (X25519 of the sender's and recipient's round keys `c`).
public struct EncryptedShare: Equatable, Sendable {
  public var from: [UInt8]
  public var to: [UInt8]
  public var box: [UInt8]
  public init(from: [UInt8], to: [UInt8], box: [UInt8]) {
    self.from = from
    self.to = to
    self.box = box
  }
}

/// What a node reveals at unmasking about one neighbour: the share of its self-mask seed b (it sent its masked
/// update) or of its mask key s (it dropped out), never both.
public struct RevealedShare: Equatable, Sendable {
  public enum Kind: UInt8, Sendable { case selfMask = 0, maskKey = 1 }
  public var about: [UInt8]
  public var kind: Kind
  public var share: Shamir.Share
  public init(about: [UInt8], kind: Kind, share: Shamir.Share) {
    self.about = about
    self.kind = kind
    self.share = share
  }
}

/// The plaintext of a share box: "AGORA-SECAGG-SHARE-v1" ‖ u64 round ‖ from ‖ to ‖ x ‖ share of s (32) ‖ share of b (32).
enum ShareBox {
  static let label = Array("AGORA-SECAGG-SHARE-v1".utf8)
  static func encode(round: UInt64, from: [UInt8], to: [UInt8], x: UInt8, s: [UInt8], b: [UInt8]) -> [UInt8] {
    var out = label
    for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: round >> (8 * i))) }
    return out + from + to + [x] + s + b
  }

  static func decode(_ p: [UInt8], round: UInt64, from: [UInt8], to: [UInt8]) throws -> (x: UInt8, s: [UInt8], b: [UInt8]) {
    let head = label.count + 8 + 64
    guard p.count == head + 1 + 64, Array(p.prefix(label.count)) == label else { throw SecureAggregationError.share("malformed share from \(short(from))") }
    var r: UInt64 = 0
    for i in 0..<8 { r |= UInt64(p[label.count + i]) << (8 * i) }
    guard r == round, Array(p[(label.count + 8)..<(label.count + 40)]) == from, Array(p[(label.count + 40)..<head]) == to else {
      throw SecureAggregationError.share("the share from \(short(from)) names another round, sender or recipient")
    }
    return (p[head], Array(p[(head + 1)..<(head + 33)]), Array(p[(head + 33)...]))
  }
}

/// One node's part in one round of secure aggregation (SecAgg+, Bell et al. 2020, after Bonawitz et al. 2017):
///
/// 1. `advertisement`: fresh keys c, s and a commitment to a fresh self-mask seed b, signed;
/// 2. `accept(roster:)`: checks every advertisement against the members' enrolled keys and its own against
///    what it sent, then Shamir-shares s and b among its neighbours (threshold t), one box per neighbour;
/// 3. `receive(shares:)`: the boxes its neighbours sent it (their presence says who masks with whom);
/// 4. `mask`: adds PRG(b) and, for each neighbour v that shared, ±PRG(s_uv) to the encoded update;
/// 5. `reveal`: for each neighbour the coordinator names, the share of b (it sent its update) or of s (it
///    dropped out) — once per round; a request that names a node both ways, or a second request, is refused.
public final class SecureAggregationNode {
  public let federation: String
  public let round: UInt64
  public let node: [UInt8]
  public let advertisement: Advertisement
  let c: (publicKey: [UInt8], secretKey: [UInt8])
  let s: (publicKey: [UInt8], secretKey: [UInt8])
  let b: [UInt8]
  public private(set) var roster: Roster?
  var me = -1
  /// Shares held of each neighbour (by roster index): its point, share of s, share of b.
  var held: [Int: (x: UInt8, s: [UInt8], b: [UInt8])] = [:]
  var revealed = false

  public init(federation: String, round: UInt64, node: [UInt8], signSecretKey: [UInt8]) throws {
    self.federation = federation
    self.round = round
    self.node = node
    c = try Sodium.boxKeypair()
    s = try Sodium.boxKeypair()
    b = Sodium.randomBytes(32)
    let commitment = MaskSeeds.commitment(b)
    let statement = Advertisement.statement(federation: federation, round: round, node: node, cPublic: c.publicKey, sPublic: s.publicKey, commitment: commitment)
    advertisement = Advertisement(node: node, cPublic: c.publicKey, sPublic: s.publicKey, selfMaskCommitment: commitment,
                                  signature: try Sodium.sign(statement, secretKey: signSecretKey))
  }

  /// The neighbours (roster indices) whose shares arrived: those this node masks with.
  public var maskingWith: [Int] { held.keys.sorted() }

  /// Step 2. `signPublic` gives a member's enrolled Ed25519 key by node id (nil: not a member).
  public func accept(roster: Roster, signPublic: ([UInt8]) -> [UInt8]?) throws -> [EncryptedShare] {
    guard self.roster == nil else { throw SecureAggregationError.roster("a second roster for round \(round)") }
    guard roster.round == round, roster.federation == federation else { throw SecureAggregationError.roster("it is for another round or federation") }
    guard let i = roster.index[node], roster.participants[i] == advertisement else {
      throw SecureAggregationError.roster("this node's advertisement is missing or changed")
    }
    for a in roster.participants {
      guard let key = signPublic(a.node) else { throw SecureAggregationError.unknownNode(short(a.node)) }
      try a.verify(federation: federation, round: round, signPublic: key)
    }
    let nb = roster.neighbours[i]
    guard !nb.isEmpty else { throw SecureAggregationError.roster("this node has no neighbours (one participant)") }
    let points = nb.map(roster.point)
    let sShares = try Shamir.split(s.secretKey, threshold: roster.threshold, points: points)
    let bShares = try Shamir.split(b, threshold: roster.threshold, points: points)
    self.roster = roster
    me = i
    return try nb.enumerated().map { (k, j) in
      let to = roster.participants[j]
      let plain = ShareBox.encode(round: round, from: node, to: to.node, x: points[k], s: sShares[k].bytes, b: bShares[k].bytes)
      return EncryptedShare(from: node, to: to.node, box: try Sodium.box(plain, to: to.cPublic, from: c.secretKey))
    }
  }

  /// Step 3: the shares the coordinator forwards to this node (from its neighbours that shared).
  public func receive(shares: [EncryptedShare]) throws {
    guard let roster else { throw SecureAggregationError.share("shares before the roster") }
    let nb = Set(roster.neighbours[me])
    for e in shares {
      guard e.to == node, let j = roster.index[e.from], nb.contains(j) else { throw SecureAggregationError.share("a share from \(short(e.from)), not a neighbour") }
      guard held[j] == nil else { throw SecureAggregationError.share("a second share from \(short(e.from))") }
      let plain = try Sodium.boxOpen(e.box, from: roster.participants[j].cPublic, to: c.secretKey)
      let d = try ShareBox.decode(plain, round: round, from: e.from, to: node)
      guard d.x == roster.point(me) else { throw SecureAggregationError.share("the share from \(short(e.from)) is for point \(d.x), this node's is \(roster.point(me))") }
      held[j] = d
    }
  }

  /// Step 4: masks `values` (an update encoded in the ring, one word per parameter) in place, mod 2^32.
  public func mask(_ values: UnsafeMutableBufferPointer<UInt32>, stream: MaskStream) throws {
    try stream.apply(try maskSeeds(), to: values)
  }

  /// The seeds of this node's masks — its self-mask (added) and one pairwise mask per neighbour that shared
  /// (added when this node's id is the smaller) — for `MaskStream.apply`, e.g. a piece of the update at a time.
  public func maskSeeds() throws -> [(seed: [UInt8], subtract: Bool)] {
    guard let roster else { throw SecureAggregationError.share("masking before the roster") }
    var masks: [(seed: [UInt8], subtract: Bool)] = [(try MaskSeeds.selfMask(b), false)]
    for j in maskingWith {
      let other = roster.participants[j]
      let seed = try MaskSeeds.pairwise(federation: federation, round: round, agreement: try Sodium.agree(secretKey: s.secretKey, publicKey: other.sPublic),
                                        a: node, b: other.node)
      // The smaller id adds, the larger subtracts: the pair cancels in the sum.
      masks.append((seed, !node.lexicographicallyPrecedes(other.node)))
    }
    return masks
  }

  /// Step 5: the shares the coordinator asks for: b's of `survivors`, s's of `dropped` (node ids among this
  /// node's neighbours that shared). Answered once per round.
  public func reveal(survivors: [[UInt8]], dropped: [[UInt8]]) throws -> [RevealedShare] {
    guard let roster else { throw SecureAggregationError.unmask("no roster") }
    guard !revealed else { throw SecureAggregationError.unmask("shares for round \(round) were already revealed; a second request is refused") }
    let both = Set(survivors).intersection(dropped)
    guard both.isEmpty else {
      throw SecureAggregationError.unmask("the request names \(both.map(short).sorted().joined(separator: ", ")) both as having sent its update and as dropped")
    }
    guard Set(survivors).count == survivors.count, Set(dropped).count == dropped.count else { throw SecureAggregationError.unmask("a node named twice") }
    guard survivors.count + 1 >= roster.threshold else {
      throw SecureAggregationError.unmask("only \(survivors.count + 1) neighbours and self sent updates; at least \(roster.threshold) must")
    }
    var out: [RevealedShare] = []
    for (list, kind) in [(survivors, RevealedShare.Kind.selfMask), (dropped, .maskKey)] {
      for id in list {
        guard let j = roster.index[id], let h = held[j] else { throw SecureAggregationError.unmask("\(short(id)) is not a neighbour that shared with this node") }
        out.append(RevealedShare(about: id, kind: kind, share: Shamir.Share(x: h.x, bytes: kind == .selfMask ? h.b : h.s)))
      }
    }
    revealed = true
    return out
  }
}
