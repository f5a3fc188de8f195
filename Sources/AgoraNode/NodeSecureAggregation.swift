import AgoraRounds
import AgoraCrypto
import AgoraData
import AgoraSecureAggregation
import AgoraTensor
import AgoraTransport
import AgoraWire
import Foundation

/// A node's side of secure aggregation (SPEC §7.2), over its endpoint: keys, roster and shares before it
/// trains (`setup`), the masked payload (`encode`), and the reveal at unmasking (`reveal`). The endpoint diverts
/// the coordinator's SA_* messages into `inbox`, so that fetching and uploading do not swallow them.
public final class SecureAggregationClient {
  public struct Round {
    public let party: SecureAggregationNode
    public let encoding: SecureEncoding
  }

  let endpoint: Endpoint
  let identity: Identity
  let federation: FederationConfig
  let members: EnrolmentRegistry
  let embedding: (offset: Int, count: Int, width: Int)
  let stop: ManagedAtomicFlag
  let inbox = SecureInbox()
  var log: (String) -> Void

  public init(endpoint: Endpoint, identity: Identity, federation: FederationConfig, embedding: (offset: Int, count: Int, width: Int),
              stop: ManagedAtomicFlag, log: @escaping (String) -> Void) throws {
    guard let dir = federation.members else {
      throw ConfigError(file: federation.path, key: "federation.members", problem: "secure aggregation needs the members' cards")
    }
    self.endpoint = endpoint
    self.identity = identity
    self.federation = federation
    members = try EnrolmentRegistry.load(directory: dir)
    self.embedding = embedding
    self.stop = stop
    self.log = log
    endpoint.divert { [inbox] in inbox.take($0) }
  }

  /// Keys (SA_KEYS), the roster (SA_ROSTER, checked against this node's own copy of the members' cards and its
  /// federation's settings) and this node's shares (SA_SHARES).
  public func setup(round r: UInt64, deadline: Date) throws -> Round {
    let fed = federation
    inbox.open(round: r)
    let party = try SecureAggregationNode(federation: fed.id, round: r, node: identity.card.nodeID, signSecretKey: identity.signSecret)
    let a = party.advertisement
    endpoint.send(.secaggKeys(round: r, keys: SecAggKeys(cPublic: a.cPublic, sPublic: a.sPublic, commitment: a.selfMaskCommitment, signature: a.signature)))
    guard let (terms, participants, payload) = try inbox.wait(until: deadline, stop: stop, { m -> (SecAggRosterTerms, [SecAggParticipant], [UInt8])? in
      if case .secaggRoster(let rr, let t, let ps, let p) = m, rr == r { return (t, ps, p.array) }
      return nil
    }) else { throw TransferError.timeout("no secure-aggregation roster for round \(r) before its deadline") }
    let parameters = SecureAggregationParameters(neighbours: fed.secureAggregationNeighbours, thresholdFraction: fed.secureAggregationThreshold)
    let ownPermille = UInt16(SecureAggregationParameters(thresholdFraction: fed.secureAggregationThreshold).thresholdPermille)
    let ringBits = fed.secureAggregationRing.bits(participants: participants.count)
    guard Int(terms.ringBits) == ringBits, Int(terms.neighbours) == fed.secureAggregationNeighbours, terms.thresholdPermille == ownPermille else {
      throw SecureAggregationError.roster("the roster asks a \(terms.ringBits)-bit ring, \(terms.neighbours) neighbours, threshold \(terms.thresholdPermille)‰; this node is set to \(ringBits) (\(fed.secureAggregationRing), \(participants.count) participants), \(fed.secureAggregationNeighbours), \(ownPermille)‰ (\(fed.path))")
    }
    let rowsExpected = fed.embeddingRows == .token_counts && fed.dpClip == 0 ? embedding.count : 0
    guard terms.ranges == 1, Int(terms.rows) == rowsExpected else {
      throw SecureAggregationError.roster("the roster's encoding has \(terms.ranges) ranges and \(terms.rows) row totals; this federation uses 1 and \(rowsExpected)")
    }
    let floats: [Float] = payload.withUnsafeBytes { raw in
      (0..<(raw.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
    }
    let range = floats[0]
    guard range.isFinite, range > 0, floats.dropFirst().allSatisfy({ $0.isFinite && $0 >= 0 }) else {
      throw SecureAggregationError.roster("the roster's range or row totals are not finite and positive")
    }
    let roster = try Roster(federation: fed.id, round: r, parameters: parameters, participants: participants.map {
      Advertisement(node: $0.node, cPublic: $0.keys.cPublic, sPublic: $0.keys.sPublic, selfMaskCommitment: $0.keys.commitment, signature: $0.keys.signature)
    })
    let shares = try party.accept(roster: roster, signPublic: { [members] in members.card(fingerprint: hex($0))?.signPublic })
    endpoint.send(.secaggShares(round: r, shares: shares.map { SecAggShareBox(peer: $0.to, box: $0.box) }))
    let encoding = try SecureEncoding(bits: Int(terms.ringBits), participants: participants.count, range: range,
                                      rowTotals: rowsExpected > 0 ? Array(floats.dropFirst()) : nil, rows: embedding)
    log("\(identity.card.name): round \(r): secure aggregation with \(participants.count) participants, \(roster.neighbours[roster.index[party.node]!].count) neighbours, threshold \(roster.threshold)")
    return Round(party: party, encoding: encoding)
  }

  /// The masked payload of `x` (an update plus the node's error feedback; what the encoding does not carry is
  /// left in it), once the coordinator forwarded the neighbours' shares.
  public func encode(_ x: UnsafeMutableBufferPointer<Float>, round r: UInt64, secure: Round, fraction: Float, relative: [Float]?, deadline: Date) throws -> [UInt8] {
    guard let boxes = try inbox.wait(until: deadline.addingTimeInterval(federation.secureAggregationSetupSeconds), stop: stop, { m -> [SecAggShareBox]? in
      if case .secaggShares(let rr, let b) = m, rr == r { return b }
      return nil
    }) else { throw TransferError.timeout("the coordinator forwarded no shares for round \(r)") }
    try secure.party.receive(shares: boxes.map { EncryptedShare(from: $0.peer, to: identity.card.nodeID, box: $0.box) })
    return try secure.encoding.encode(x, fraction: fraction, relative: relative, party: secure.party)
  }

  /// Unmasking: the shares the coordinator asks for (SA_UNMASK → SA_REVEAL), once. No request by `deadline`
  /// (the round was abandoned) is not an error; a request that would unmask a neighbour is refused and said.
  /// Throws only when the session ends meanwhile (LEAVE, or the coordinator no longer knows it).
  public func reveal(round r: UInt64, party: SecureAggregationNode, deadline: Date) throws -> Bool {
    // A round the coordinator closes without unmasking (quorum not reached) is followed by the next ROUND: the
    // wait ends then, not at this round's deadline, and the node is in time to send its keys for the next one.
    guard let (survivors, dropped) = try inbox.wait(until: deadline, round: r, stop: stop, { m -> ([[UInt8]], [[UInt8]])? in
      if case .secaggUnmask(let rr, let s, let d) = m, rr == r { return (s, d) }
      return nil
    }) else {
      log("\(identity.card.name): round \(r): no unmasking request came")
      return true
    }
    do {
      let shares = try party.reveal(survivors: survivors, dropped: dropped)
      endpoint.send(.secaggReveal(round: r, shares: shares.map { SecAggRevealed(about: $0.about, kind: $0.kind.rawValue, x: $0.share.x, share: $0.share.bytes) }))
      log("\(identity.card.name): round \(r): revealed \(survivors.count) self-mask and \(dropped.count) mask-key shares")
      return true
    } catch {
      endpoint.send(.error(code: ErrorCode.internalError.rawValue, message: "round \(r): \(error)", subject: .round(r)))
      log("\(identity.card.name): round \(r): unmasking request refused: \(error)")
      return false
    }
  }
}

extension NodeService {
  /// This node's V·q, as the coordinator computes it from its COUNTS (nil for a donor, or without counts).
  var ownRelative: [Float]? {
    guard config.federation.embeddingRows == .token_counts, !config.donor, let corpus = trainer?.corpus else { return nil }
    return EmbeddingRowWeights.relative(counts: EmbeddingRowWeights.sentCounts(corpus.tokenCounts(vocabSize: tokenizer.vocabSize), minimum: config.federation.tokenCountMinimum),
                                        rows: tokenizer.vocabSize)
  }
}
