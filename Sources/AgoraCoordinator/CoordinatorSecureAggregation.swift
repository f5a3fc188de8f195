import AgoraRounds
import AgoraCrypto
import AgoraRegistry
import AgoraSecureAggregation
import AgoraTensor
import AgoraText
import AgoraTransport
import AgoraWire
import Foundation

extension Message {
  /// SA_KEYS, SA_SHARES or SA_REVEAL (what a coordinator takes from nodes).
  var isSecureAggregation: Bool {
    switch self {
    case .secaggKeys, .secaggShares, .secaggReveal: return true
    default: return false
    }
  }
}

/// One round's secure aggregation on the coordinator: the protocol state, the encoding once the roster is out,
/// and the survivors' factors.
final class SecureRoundState {
  let round: UInt64
  let party: SecureAggregationCoordinator
  var encoding: SecureEncoding?
  var totals: SecureEncoding.Totals?
  init(round: UInt64, party: SecureAggregationCoordinator) {
    self.round = round
    self.party = party
  }
}

/// The coordinator's part in a round with secure aggregation (SPEC §7.2): relays keys and shares, folds masked
/// updates into the ring sum (the round's running sum, read as 32-bit words), and unmasks once.
extension CoordinatorService {
  /// SA_KEYS, SA_SHARES and SA_REVEAL from a node, for the round in progress.
  func takeSecure(_ msg: Message, from m: Inbound) {
    let who = displayName(m.userID)
    func refuse(_ why: String) {
      endpoint.send(.error(code: ErrorCode.malformed.rawValue, message: why, subject: .none), to: m.peer)
      log("  \(who): \(why)")
    }
    guard let state = held?.secure, let id = unhex(m.userID) else { return refuse("no round with secure aggregation is in progress") }
    do {
      switch msg {
      case .secaggKeys(let r, let k):
        guard r == state.round else { return refuse("keys for round \(r); round \(state.round) is in progress") }
        guard let card = enrolment.card(fingerprint: m.userID) else { return refuse("not enrolled") }
        try state.party.advertise(Advertisement(node: id, cPublic: k.cPublic, sPublic: k.sPublic, selfMaskCommitment: k.commitment, signature: k.signature),
                                  signPublic: card.signPublic)
      case .secaggShares(let r, let boxes):
        guard r == state.round else { return refuse("shares for round \(r); round \(state.round) is in progress") }
        try state.party.takeShares(from: id, boxes.map { EncryptedShare(from: id, to: $0.peer, box: $0.box) })
      case .secaggReveal(let r, let shares):
        guard r == state.round else { return refuse("shares revealed for round \(r); round \(state.round) is in progress") }
        try state.party.takeReveals(from: id, try shares.map {
          guard let kind = RevealedShare.Kind(rawValue: $0.kind) else { throw SecureAggregationError.unmask("unknown share kind \($0.kind)") }
          return RevealedShare(about: $0.about, kind: kind, share: Shamir.Share(x: $0.x, bytes: $0.share))
        })
      default:
        return
      }
    } catch {
      refuse("\(error)")
    }
  }

  /// Waits (pumping) until `done` or `until`.
  func pump(until: Date, _ done: () -> Bool) {
    while !stop.isSet && Date() < until && !done() { pump(timeout: 0.05) }
  }

  /// Keys, roster and shares (SPEC §7.2 steps 1–3) after ROUND went out: the nodes that take part (by
  /// fingerprint), or nil when fewer than two advertised keys (then no update can be taken this round).
  func secureSetup(_ h: HeldRound) -> Set<String>? {
    let fed = config.federation
    let r = h.number, selected = h.selected, deadline = h.deadline
    guard let state = h.secure else { return nil }
    let until = min(deadline, Date(timeIntervalSinceNow: fed.secureAggregationSetupSeconds))
    pump(until: until) { state.party.advertised >= selected.count }
    let roster: Roster
    do { roster = try state.party.closeRoster() } catch {
      log("  round \(r): \(error); no update can be taken this round")
      return nil
    }
    // The encoding: one range (what H AdamW steps can move a weight) and, with rows by counts, each row's total V·q.
    // With differential privacy the range also holds four standard deviations of a node's share of the noise,
    // and every node weighs the same (no row totals).
    let range = fed.secureRange(round: r, participants: roster.participants.count)
    let rowTotals = fed.embeddingRows == .token_counts && fed.dpClip == 0
      ? SecureEncoding.rowTotals(roster.participants.map { rowRelative[hex($0.node)] }, rows: modelConfig.vocabSize) : nil
    let ringBits = fed.secureAggregationRing.bits(participants: roster.participants.count)
    do {
      state.encoding = try SecureEncoding(bits: ringBits, participants: roster.participants.count, range: range, rowTotals: rowTotals,
                                          rows: (embeddingOffset, federated.embedding.rows, modelConfig.channels))
    } catch {
      log("  round \(r): \(error); no update can be taken this round")
      return nil
    }
    state.totals = state.encoding!.totals()
    var w = ByteWriter(capacity: 4 * (1 + (rowTotals?.count ?? 0)))
    w.u32(range.bitPattern)
    for x in rowTotals ?? [] { w.u32(x.bitPattern) }
    let terms = SecAggRosterTerms(ringBits: UInt8(ringBits), neighbours: UInt16(fed.secureAggregationNeighbours),
                                  thresholdPermille: UInt16(SecureAggregationParameters(thresholdFraction: fed.secureAggregationThreshold).thresholdPermille), ranges: 1, rows: UInt32(rowTotals?.count ?? 0))
    let message = Message.secaggRoster(round: UInt64(r), terms: terms, participants: roster.participants.map {
      SecAggParticipant(node: $0.node, keys: SecAggKeys(cPublic: $0.cPublic, sPublic: $0.sPublic, commitment: $0.selfMaskCommitment, signature: $0.signature))
    }, payload: Payload(w.bytes))
    // Each node's connection as it is when the message goes out (a reconnect changes the routing id).
    let selectedNodes = Set(selected.map(\.fingerprint))
    let peer = { [sessions] (fp: String) -> [UInt8]? in selectedNodes.contains(fp) ? sessions.session(fp)?.peer : nil }
    for p in roster.participants { if let peer = peer(hex(p.node)) { endpoint.send(message, to: peer) } }
    pump(until: min(deadline, Date(timeIntervalSinceNow: fed.secureAggregationSetupSeconds))) { state.party.shared.count >= roster.participants.count }
    var taking: Set<String> = []
    for i in state.party.shared.sorted() {
      let node = roster.participants[i].node
      guard let peer = peer(hex(node)) else { continue }
      endpoint.send(.secaggShares(round: UInt64(r), shares: state.party.shares(for: node).map { SecAggShareBox(peer: $0.from, box: $0.box) }), to: peer)
      taking.insert(hex(node))
    }
    log("  round \(r): secure aggregation: \(roster.participants.count) advertised keys, \(taking.count) shared (k = \(roster.degree), t = \(roster.threshold), \(ringBits)-bit ring)")
    return taking
  }

  /// Unmasking (SPEC §7.2 step 5): asks every node whose masked update is in the sum for its shares, removes the
  /// masks and leaves the survivors' weighted mean in `sum`. False (and a log line) when it cannot.
  func secureFinish(_ h: HeldRound) -> Bool {
    let fed = config.federation
    let r = h.number
    guard let state = h.secure, let encoding = state.encoding, let totals = state.totals, let roster = state.party.roster else { return false }
    var asked = 0
    for i in state.party.sentUpdate.sorted() {
      let node = roster.participants[i].node
      guard let s = sessions.session(hex(node)), let req = try? state.party.request(for: node) else { continue }
      endpoint.send(.secaggUnmask(round: UInt64(r), survivors: req.survivors, dropped: req.dropped), to: s.peer)
      asked += 1
    }
    pump(until: Date(timeIntervalSinceNow: fed.secureAggregationSetupSeconds)) { state.party.answered.count >= asked }
    let t0 = Date()
    do {
      try sum.pointer.withMemoryRebound(to: UInt32.self, capacity: sum.count) {
        try state.party.unmask(UnsafeMutableBufferPointer(start: $0, count: sum.count), stream: try MaskStream(threads: Parallel.threads, ringBits: encoding.codec.bits))
      }
    } catch {
      log("  round \(r): unmasking failed: \(error); no version this round")
      return false
    }
    encoding.decode(UnsafeMutableRawPointer(sum.pointer), count: sum.count, totals: totals)
    // What is left to check: the unmasked mean (no single update can be seen). Every value of an honest mean lies
    // within the announced range.
    let limit = 2 * encoding.range
    var worst: Float = 0
    for i in 0..<sum.count { worst = max(worst, abs(sum.pointer[i])) }
    guard worst.isFinite, worst <= limit else {
      log(String(format: "  round %d: the unmasked mean has a value of %.3g, beyond twice the range %.3g: refused (a node sent a malformed masked update); no version", r, worst, encoding.range))
      return false
    }
    log(String(format: "  round %d: unmasked the sum of %d updates (%d answered; %.0f ms)", r, state.party.sentUpdate.count, state.party.answered.count,
               Date().timeIntervalSince(t0) * 1000))
    return true
  }
}

extension VersionRecord {
  /// The record with its differential-privacy figures (nil: none).
  func withPrivacy(_ p: (noise: Double, epsilon: Double, delta: Double)?) -> VersionRecord {
    var v = self
    if let p { (v.dpNoise, v.dpEpsilon, v.dpDelta) = (p.noise, p.epsilon, p.delta) }
    return v
  }
}

extension CoordinatorService {
  /// Differential privacy of the version round `h` makes: the noise multiplier actually in its sum (z; under
  /// secure aggregation only the senders' shares of the noise are in it, z·√(senders/participants)) and ε at
  /// `rounds.dp_delta` of the whole lineage, every round's noise composed by the Rényi accountant (every live
  /// node takes part in a round: no sampling amplification, q = 1). Nil without differential privacy.
  func privacy(_ h: HeldRound, parent: Int) -> (noise: Double, epsilon: Double, delta: Double)? {
    let fed = config.federation
    let r = h.number
    guard fed.dpClip > 0 else { return nil }
    var z = fed.dpNoiseMultiplier
    if let s = h.secure, let roster = s.party.roster {
      z *= (Double(s.party.sentUpdate.count) / Double(max(roster.participants.count, 1))).squareRoot()
    }
    var acc = PrivacyAccountant()
    // A version made without noise (before privacy was turned on) makes ε infinite, as it should.
    for v in ((try? store.lineage(parent)) ?? []) where v.number > 0 { acc.add(z: v.dpNoise ?? 0) }
    acc.add(z: z)
    let e = acc.epsilon(delta: fed.dpDelta).epsilon
    log(String(format: "  round %d: differential privacy: noise multiplier %.3f in the sum, ε = %.3g at δ = %g over %d rounds", r, z, e, fed.dpDelta, acc.rounds))
    return (z, e, fed.dpDelta)
  }
}
