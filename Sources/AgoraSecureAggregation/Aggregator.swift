import AgoraCrypto

/// The coordinator's part in one round of secure aggregation. It never sees a node's update unmasked: it
/// collects signed advertisements (`advertise`), publishes the roster, routes the share boxes it cannot open
/// (`takeShares`, `shares(for:)`), notes whose masked updates it folded into the ring sum (`sent`), asks each
/// survivor for the shares of its neighbours (`request(for:)`, `takeReveals`), and removes the masks from the
/// sum (`unmask`): the self-masks of the nodes that sent, and the pairwise masks between those that sent and
/// their neighbours that dropped out after sharing. Memory: the shares (64 octets per pair) and nothing per
/// parameter beyond one keystream scratch.
public final class SecureAggregationCoordinator {
  public let federation: String
  public let round: UInt64
  public let parameters: SecureAggregationParameters
  var ads: [[UInt8]: Advertisement] = [:]
  public private(set) var roster: Roster?
  /// Boxes by recipient, from nodes whose shares for every neighbour arrived (U2).
  var boxes: [[UInt8]: [EncryptedShare]] = [:]
  public private(set) var shared: Set<Int> = []
  /// Nodes whose masked update is in the sum (U3).
  public private(set) var sentUpdate: Set<Int> = []
  var requests: [Int: (survivors: Set<Int>, dropped: Set<Int>)] = [:]
  var reveals: [Int: [RevealedShare.Kind: [Shamir.Share]]] = [:]
  public private(set) var answered: Set<Int> = []

  public init(federation: String, round: UInt64, parameters: SecureAggregationParameters) {
    self.federation = federation
    self.round = round
    self.parameters = parameters
  }

  /// Step 1: a node's advertisement, checked against its enrolled signing key.
  public func advertise(_ a: Advertisement, signPublic: [UInt8]) throws {
    guard roster == nil else { throw SecureAggregationError.roster("the roster of round \(round) is closed") }
    try a.verify(federation: federation, round: round, signPublic: signPublic)
    guard ads[a.node] == nil else { throw SecureAggregationError.roster("\(short(a.node)) advertised twice") }
    ads[a.node] = a
  }

  public var advertised: Int { ads.count }

  /// Closes step 1: the roster of every node that advertised.
  public func closeRoster() throws -> Roster {
    guard ads.count >= 2 else { throw SecureAggregationError.roster("\(ads.count) node(s) advertised keys; secure aggregation needs at least 2") }
    let r = try Roster(federation: federation, round: round, parameters: parameters, participants: Array(ads.values))
    roster = r
    return r
  }

  /// Step 2: a node's boxes, one for each of its neighbours, or none are taken.
  public func takeShares(from node: [UInt8], _ shares: [EncryptedShare]) throws {
    guard let roster, let i = roster.index[node] else { throw SecureAggregationError.share("\(short(node)) is not in the roster") }
    guard !shared.contains(i) else { throw SecureAggregationError.share("\(short(node)) sent its shares twice") }
    let want = Set(roster.neighbours[i].map { roster.participants[$0].node })
    let got = shares.map(\.to)
    guard shares.allSatisfy({ $0.from == node }), Set(got) == want, got.count == want.count else {
      throw SecureAggregationError.share("\(short(node)) must send exactly one share to each of its \(want.count) neighbours")
    }
    for e in shares { boxes[e.to, default: []].append(e) }
    shared.insert(i)
  }

  /// Closes step 2: the boxes for `node` from its neighbours that shared (empty for a node that did not share:
  /// it takes no further part).
  public func shares(for node: [UInt8]) -> [EncryptedShare] {
    guard let roster, let i = roster.index[node], shared.contains(i) else { return [] }
    return (boxes[node] ?? []).filter { roster.index[$0.from].map(shared.contains) ?? false }
  }

  /// Step 3: `node`'s masked update is in the sum.
  public func sent(_ node: [UInt8]) throws {
    guard let roster, let i = roster.index[node], shared.contains(i) else {
      throw SecureAggregationError.share("\(short(node)) sent a masked update without taking part in the share exchange")
    }
    guard sentUpdate.insert(i).inserted else { throw SecureAggregationError.share("\(short(node)) sent two masked updates") }
  }

  /// Step 4: what survivor `node` is asked for: its neighbours that shared, split into those whose update is
  /// in the sum and those that dropped out. Recorded; reveals must match it.
  public func request(for node: [UInt8]) throws -> (survivors: [[UInt8]], dropped: [[UInt8]]) {
    guard let roster, let i = roster.index[node], sentUpdate.contains(i) else { throw SecureAggregationError.unmask("\(short(node)) did not send an update") }
    let nb = roster.neighbours[i].filter(shared.contains)
    let s = Set(nb.filter(sentUpdate.contains)), d = Set(nb.filter { !sentUpdate.contains($0) })
    requests[i] = (s, d)
    return (s.sorted().map { roster.participants[$0].node }, d.sorted().map { roster.participants[$0].node })
  }

  /// A survivor's answer, checked against what it was asked.
  public func takeReveals(from node: [UInt8], _ shares: [RevealedShare]) throws {
    guard let roster, let i = roster.index[node], let req = requests[i] else { throw SecureAggregationError.unmask("\(short(node)) was not asked") }
    guard answered.insert(i).inserted else { throw SecureAggregationError.unmask("\(short(node)) answered twice") }
    var seen = Set<Int>()
    for r in shares {
      guard let j = roster.index[r.about], seen.insert(j).inserted,
            (r.kind == .selfMask && req.survivors.contains(j)) || (r.kind == .maskKey && req.dropped.contains(j)),
            r.share.x == roster.point(i), r.share.bytes.count == 32 else {
        throw SecureAggregationError.unmask("\(short(node)) revealed a share it was not asked for")
      }
    }
    guard seen.count == req.survivors.count + req.dropped.count else { throw SecureAggregationError.unmask("\(short(node)) left shares out") }
    for r in shares { reveals[roster.index[r.about]!, default: [:]][r.kind, default: []].append(r.share) }
  }

  /// Nodes whose secrets cannot be rebuilt yet (fewer than t shares revealed), by node id.
  public var missing: [[UInt8]] {
    guard let roster else { return [] }
    return shared.sorted().filter { j in
      (reveals[j]?[sentUpdate.contains(j) ? .selfMask : .maskKey]?.count ?? 0) < roster.threshold
        && (sentUpdate.contains(j) || roster.neighbours[j].contains { sentUpdate.contains($0) })
    }.map { roster.participants[$0].node }
  }

  /// Rebuilds one secret from its shares: any t of them whose result matches `check`; with more than t, other
  /// subsets are tried when a share is bad.
  func rebuild(_ shares: [Shamir.Share], threshold t: Int, node: Int, check: ([UInt8]) throws -> Bool) throws -> [UInt8] {
    guard shares.count >= t else {
      throw SecureAggregationError.tooFewShares(node: short(roster!.participants[node].node), got: shares.count, threshold: t)
    }
    // The first t, then each window of t (a bounded number of tries).
    for start in 0...(shares.count - t) {
      let secret = try Shamir.combine(Array(shares[start..<(start + t)]), threshold: t)
      if try check(secret) { return secret }
    }
    throw SecureAggregationError.unmask("the revealed shares of \(short(roster!.participants[node].node)) do not rebuild its committed secret")
  }

  /// Step 5: removes every mask from `sum` (the masked updates of `sentUpdate` added mod 2^32).
  public func unmask(_ sum: UnsafeMutableBufferPointer<UInt32>, stream: MaskStream) throws {
    guard let roster else { throw SecureAggregationError.unmask("no roster") }
    var masks: [(seed: [UInt8], subtract: Bool)] = []
    for j in sentUpdate.sorted() {
      let a = roster.participants[j]
      let b = try rebuild(reveals[j]?[.selfMask] ?? [], threshold: roster.threshold, node: j) { MaskSeeds.commitment($0) == a.selfMaskCommitment }
      masks.append((try MaskSeeds.selfMask(b), true))
    }
    for j in shared.sorted() where !sentUpdate.contains(j) {
      let a = roster.participants[j]
      let live = roster.neighbours[j].filter(sentUpdate.contains)
      guard !live.isEmpty else { continue }
      let sk = try rebuild(reveals[j]?[.maskKey] ?? [], threshold: roster.threshold, node: j) { try Sodium.boxPublicKey(secretKey: $0) == a.sPublic }
      for v in live {
        let other = roster.participants[v]
        let seed = try MaskSeeds.pairwise(federation: federation, round: round, agreement: try Sodium.agree(secretKey: sk, publicKey: other.sPublic),
                                          a: a.node, b: other.node)
        // v added +PRG when its id is the smaller, −PRG otherwise: take off what it added.
        masks.append((seed, other.node.lexicographicallyPrecedes(a.node)))
      }
    }
    try stream.apply(masks, to: sum)
  }
}
