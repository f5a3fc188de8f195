import AgoraCrypto
import AgoraData
import AgoraSecureAggregation
import AgoraTensor
import AgoraTransport
import AgoraWire
import Foundation

/// A node's part in a round with secure aggregation (SPEC §7.2).
extension NodeService {
  struct SecureRound {
    let party: SecureAggregationNode
    let encoding: SecureEncoding
  }

  /// Keys (SA_KEYS), the roster (SA_ROSTER, checked against this node's own copy of the members' cards and its
  /// federation's settings) and this node's shares (SA_SHARES), before it trains.
  func secureSetup(round r: UInt64, deadline: Date) throws -> SecureRound {
    let fed = config.federation
    secureInbox.drop(before: r)
    let party = try SecureAggregationNode(federation: fed.id, round: r, node: identity.card.nodeID, signSecretKey: identity.signSecret)
    let a = party.advertisement
    endpoint.send(.secaggKeys(round: r, keys: SecAggKeys(cPublic: a.cPublic, sPublic: a.sPublic, commitment: a.selfMaskCommitment, signature: a.signature)))
    guard let (terms, participants, payload) = secureInbox.wait(until: deadline, stop: stop, { m -> (SecAggRosterTerms, [SecAggParticipant], [UInt8])? in
      if case .secaggRoster(let rr, let t, let ps, let p) = m, rr == r { return (t, ps, p.array) }
      return nil
    }) else { throw TransferError.timeout("no secure-aggregation roster for round \(r) before its deadline") }
    let parameters = SecureAggregationParameters(neighbours: fed.secureAggregationNeighbours, thresholdFraction: fed.secureAggregationThreshold)
    let ownPermille = UInt16((fed.secureAggregationThreshold * 1000).rounded())
    guard Int(terms.ringBits) == fed.secureAggregationBits, Int(terms.neighbours) == fed.secureAggregationNeighbours, terms.thresholdPermille == ownPermille else {
      throw SecureAggregationError.roster("the roster asks a \(terms.ringBits)-bit ring, \(terms.neighbours) neighbours, threshold \(terms.thresholdPermille)‰; this node is set to \(fed.secureAggregationBits), \(fed.secureAggregationNeighbours), \(ownPermille)‰ (\(fed.path))")
    }
    let rowsExpected = fed.embeddingRows == .token_counts ? embedding.count : 0
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
    let members = members
    let shares = try party.accept(roster: roster, signPublic: { members?.card(fingerprint: hex($0))?.signPublic })
    endpoint.send(.secaggShares(round: r, shares: shares.map { SecAggShareBox(peer: $0.to, box: $0.box) }))
    let encoding = try SecureEncoding(bits: Int(terms.ringBits), participants: participants.count, range: range,
                                      rowTotals: rowsExpected > 0 ? Array(floats.dropFirst()) : nil, rows: embedding)
    log("\(config.name): round \(r): secure aggregation with \(participants.count) participants, \(roster.neighbours[roster.index[party.node]!].count) neighbours, threshold \(roster.threshold)")
    return SecureRound(party: party, encoding: encoding)
  }

  /// The masked update: Δ plus this node's error feedback, encoded in the ring (what is not carried becomes the
  /// new error feedback), masked with the neighbours whose shares the coordinator forwarded.
  func secureEncode(_ delta: FloatBuffer, round r: UInt64, secure: SecureRound, fraction: Float, deadline: Date) throws -> [UInt8] {
    guard let boxes = secureInbox.wait(until: deadline.addingTimeInterval(config.federation.secureAggregationSetupSeconds), stop: stop, { m -> [SecAggShareBox]? in
      if case .secaggShares(let rr, let b) = m, rr == r { return b }
      return nil
    }) else { throw TransferError.timeout("the coordinator forwarded no shares for round \(r)") }
    try secure.party.receive(shares: boxes.map { EncryptedShare(from: $0.peer, to: identity.card.nodeID, box: $0.box) })
    let (d, e) = (delta.pointer, errorFeedback.pointer)
    for i in 0..<delta.count { d[i] += e[i] }
    let relative = config.federation.embeddingRows == .token_counts && !config.donor ? ownRelative : nil
    let payload = try secure.encoding.encode(delta.buffer, fraction: fraction, relative: relative, party: secure.party,
                                             seed: r ^ fnv1a(identity.card.fingerprint) ^ 0x5EC)
    errorFeedback.copy(from: delta)
    return payload
  }

  /// This node's V·q, as the coordinator computes it from its COUNTS.
  var ownRelative: [Float]? {
    guard let corpus = trainer?.corpus else { return nil }
    let fed = config.federation
    return EmbeddingRowWeights.relative(counts: NodeService.tokenCounts(corpus.tokenCounts(vocabSize: tokenizer.vocabSize), minimum: fed.tokenCountMinimum),
                                        rows: tokenizer.vocabSize)
  }

  /// Unmasking: the shares the coordinator asks for (SA_UNMASK → SA_REVEAL), once; no request by `deadline`
  /// (the round was abandoned) is not an error.
  func secureReveal(round r: UInt64, party: SecureAggregationNode, deadline: Date) throws {
    guard let (survivors, dropped) = secureInbox.wait(until: deadline, stop: stop, { m -> ([[UInt8]], [[UInt8]])? in
      if case .secaggUnmask(let rr, let s, let d) = m, rr == r { return (s, d) }
      return nil
    }) else {
      log("\(config.name): round \(r): no unmasking request came")
      return
    }
    do {
      let shares = try party.reveal(survivors: survivors, dropped: dropped)
      endpoint.send(.secaggReveal(round: r, shares: shares.map { SecAggRevealed(about: $0.about, kind: $0.kind.rawValue, x: $0.share.x, share: $0.share.bytes) }))
      log("\(config.name): round \(r): revealed \(survivors.count) self-mask and \(dropped.count) mask-key shares")
    } catch {
      // An honest node refuses a request that would unmask a neighbour, and says so.
      abandon(round: r, "\(error)")
    }
  }
}
