import AgoraCrypto
import AgoraWire
import Foundation

/// The coordinator's view of connected nodes: JOIN/WELCOME, liveness, LEAVE, malformed input and revocation.
///
/// Any message from a node counts as a sign of life; a node silent for `liveness` heartbeat intervals is
/// expired. Revoking a node sends its live session ERROR(revoked) at once, and every later message with its
/// User-Id is dropped (the ZAP handler already refuses its new connections).
public final class SessionTable: @unchecked Sendable {
  public struct Parameters: Sendable {
    public var federation: String
    public var heartbeatMillis: UInt32 = 1000
    /// Heartbeat intervals of silence before a session expires (generous: a loaded machine delays threads).
    public var liveness: UInt8 = 10
    public var chunkSize: UInt32 = 1 << 20
    public var credit: UInt16 = 8
    public var aggregationKey: [UInt8]
    /// What a node must agree on to join (nil: not checked, for transport-level uses without a model).
    public var terms: TrainingTerms? = nil
    public init(federation: String, aggregationKey: [UInt8]) {
      self.federation = federation
      self.aggregationKey = aggregationKey
    }
  }

  public struct Session: Sendable {
    public var fingerprint: String
    public var peer: [UInt8]
    public var name: String
    public var software: String
    public var latestVersion: [UInt8]
    /// A compute donor (JOIN role 1): it trains on public shards the coordinator assigns.
    public var donor: Bool
    public var joined: Date
    public var lastSeen: Date
  }

  /// What `handle` did with a message.
  public enum Outcome: Equatable {
    /// The session layer answered it (JOIN, HEARTBEAT, LEAVE) or refused it; nothing more to do.
    case handled
    /// A message for the layers above (rounds, uploads, fetches) from a joined, enrolled node.
    case forward
    /// Dropped: malformed, from a revoked or unknown identity, or before JOIN.
    case dropped(String)
  }

  public let parameters: Parameters
  let registry: EnrolmentRegistry
  let endpoint: Endpoint
  private let lock = NSLock()
  private var sessions: [String: Session] = [:]
  public var log: @Sendable (String) -> Void = { _ in }

  public init(parameters: Parameters, registry: EnrolmentRegistry, endpoint: Endpoint) {
    self.parameters = parameters
    self.registry = registry
    self.endpoint = endpoint
    registry.onRevoke { [weak self] card in self?.revoked(card) }
    // Heartbeats of joined nodes are answered in the endpoint's I/O thread, never queued behind the coordinator's
    // work: a coordinator busy for a while (a large model's step or hash) would otherwise let them fill its inbox,
    // stop reading, and so stop libzmq's own heartbeats too, and its nodes would reconnect and lose what was on the way.
    endpoint.divert { [weak self] inbound in self?.answerHeartbeat(inbound) ?? false }
  }

  public var live: [Session] {
    lock.lock(); defer { lock.unlock() }
    return sessions.values.sorted { $0.joined < $1.joined }
  }

  public func session(_ fingerprint: String) -> Session? {
    lock.lock(); defer { lock.unlock() }
    return sessions[fingerprint]
  }

  public func handle(_ inbound: Inbound, now: Date = Date()) -> Outcome {
    let fp = inbound.userID
    guard !fp.isEmpty, registry.card(fingerprint: fp) != nil else {
      // Only possible for a revoked node whose TCP connection is still open: never serve it.
      return .dropped("message from a revoked or unknown identity \(fp.prefix(12))")
    }
    let message: Message
    switch inbound.message {
    case .success(let m): message = m
    case .failure(let e):
      endpoint.send(.error(code: e.code.rawValue, message: e.description, subject: .none), to: inbound.peer)
      touch(fp, peer: inbound.peer, now: now)
      return .dropped("malformed message from \(fp.prefix(12)): \(e)")
    }
    switch message {
    case .join(_, let software, let latest, let role, let terms):
      // The name shown and recorded is the enrolment card's, never the one a node says at JOIN.
      let name = Printable.line(registry.card(fingerprint: fp)?.name ?? String(fp.prefix(12)))
      if role != 1, registry.isDonorOnly(fp) {
        // A card enrolled by invitation never holds an institution's role (SPEC §2.2).
        lock.lock(); sessions[fp] = nil; lock.unlock()
        endpoint.send(.error(code: ErrorCode.invitation.rawValue, message: "this card was enrolled by invitation as a compute donor: join with role 1",
                             subject: .none), to: inbound.peer)
        log("\(name) (\(fp.prefix(12))) refused at JOIN: enrolled by invitation as a compute donor, it asked for an institution's role")
        return .handled
      }
      if let mine = parameters.terms {
        let diff = terms.differences(fromFederation: mine)
        guard diff.isEmpty else {
          lock.lock(); sessions[fp] = nil; lock.unlock()
          let text = "this node's terms differ from the federation's: " + diff.joined(separator: "; ")
          endpoint.send(.error(code: ErrorCode.termsMismatch.rawValue, message: text, subject: .none), to: inbound.peer)
          log("\(name) (\(fp.prefix(12))) refused at JOIN: " + diff.joined(separator: "; "))
          return .handled
        }
      }
      lock.lock()
      // JOIN again on the same connection (same routing id) is the node's JOIN loop repeating itself while
      // WELCOME was on its way (a busy coordinator answers late): the same session, not a restart, so the
      // node keeps its place in a round. A restarted node comes on a new connection.
      let repeated = sessions[fp].map { $0.peer == inbound.peer && $0.donor == (role == 1) } ?? false
      if repeated {
        sessions[fp]!.lastSeen = now
        sessions[fp]!.latestVersion = latest
      } else {
        sessions[fp] = Session(fingerprint: fp, peer: inbound.peer, name: name, software: Printable.line(software), latestVersion: latest, donor: role == 1,
                               joined: now, lastSeen: now)
      }
      lock.unlock()
      let p = parameters
      endpoint.send(.welcome(federation: p.federation, heartbeatMillis: p.heartbeatMillis, liveness: p.liveness, chunkSize: p.chunkSize,
                             credit: p.credit, aggregationKey: p.aggregationKey), to: inbound.peer)
      if !repeated { log("\(name) (\(fp.prefix(12))) joined\(role == 1 ? " as a compute donor" : "")") }
      return .handled
    case .vocabulary:
      // The vocabulary phase comes before JOIN (a node without the federation's tokenizer cannot state its terms).
      return .forward
    case .leave(_, let reason):
      lock.lock(); let s = sessions.removeValue(forKey: fp); left.append(fp); lock.unlock()
      log("\(s?.name ?? String(fp.prefix(12))) left: \(Printable.line(reason))")
      return .handled
    default:
      guard touch(fp, peer: inbound.peer, now: now) else {
        endpoint.send(.error(code: ErrorCode.notJoined.rawValue, message: "send JOIN first", subject: .none), to: inbound.peer)
        return .dropped("\(fp.prefix(12)) sent \(message.type) before JOIN")
      }
      if message == .heartbeat {
        endpoint.send(.heartbeat, to: inbound.peer)
        return .handled
      }
      return .forward
    }
  }

  /// A joined node's HEARTBEAT: recorded and answered here (true); anything else is left for `handle` (false).
  func answerHeartbeat(_ inbound: Inbound) -> Bool {
    guard case .success(.heartbeat) = inbound.message, !inbound.userID.isEmpty, touch(inbound.userID, peer: inbound.peer, now: Date()) else { return false }
    endpoint.send(.heartbeat, to: inbound.peer)
    return true
  }

  /// Records a sign of life (and the current routing id: it changes when a node reconnects).
  @discardableResult
  func touch(_ fp: String, peer: [UInt8], now: Date) -> Bool {
    lock.lock(); defer { lock.unlock() }
    guard sessions[fp] != nil else { return false }
    sessions[fp]!.lastSeen = now
    sessions[fp]!.peer = peer
    return true
  }

  /// Fingerprints of nodes that sent LEAVE since the last `takeLeft()`.
  private var left: [String] = []

  /// The nodes that left (LEAVE) since the last call.
  public func takeLeft() -> [String] {
    lock.lock(); defer { lock.unlock() }
    let l = left
    left = []
    return l
  }

  /// Removes and returns the sessions silent for longer than `liveness` heartbeat intervals. Silence is counted
  /// from the last message that arrived from the node's connection, read or not: a message waiting in the queue
  /// while the coordinator was busy is a sign of life.
  public func expire(now: Date = Date()) -> [Session] {
    let limit = Double(parameters.liveness) * Double(parameters.heartbeatMillis) / 1000
    lock.lock(); defer { lock.unlock() }
    for (fp, s) in sessions where now.timeIntervalSince(s.lastSeen) > limit {
      if let heard = endpoint.lastArrival(from: s.peer), heard > s.lastSeen { sessions[fp]!.lastSeen = heard }
    }
    let gone = sessions.values.filter { now.timeIntervalSince($0.lastSeen) > limit }
    for s in gone { sessions[s.fingerprint] = nil }
    return gone
  }

  private func revoked(_ card: EnrolmentCard) {
    lock.lock(); let s = sessions.removeValue(forKey: card.fingerprint); lock.unlock()
    guard let s else { return }
    endpoint.send(.error(code: ErrorCode.revoked.rawValue, message: "the key of \(card.name) was revoked", subject: .none), to: s.peer)
    log("revoked \(card.name) (\(card.fingerprint.prefix(12))): live session closed")
  }
}
