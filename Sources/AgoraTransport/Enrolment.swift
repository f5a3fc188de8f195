import AgoraCrypto
import AgoraWire
import CZeroMQ
import Foundation
import TOMLKit

/// The set of enrolled identities the coordinator admits, keyed by CURVE public key, with revocation.
/// Thread-safe: the ZAP handler reads it on its own thread while the coordinator changes it. The coordinator
/// loads it from its directory of enrolment cards and mirrors it into the registry's `nodes` table.
public final class EnrolmentRegistry: @unchecked Sendable {
  private let lock = NSLock()
  private var byCurve: [[UInt8]: EnrolmentCard] = [:]
  private var revoked: Set<String> = []
  private var observers: [(EnrolmentCard) -> Void] = []
  /// Fingerprints (BLAKE2b-256 of the CURVE key, hex) of refused connection attempts, most recent last.
  public private(set) var refusals: [String] = []
  /// Cards enrolled by invitation (SPEC §2.2): compute donors only, by fingerprint.
  private var donorOnly: Set<String> = []
  /// Invitations (SPEC §2.2): which invitation id (hex), if any, a CurveZMQ key belongs to that can still enrol —
  /// unrevoked, unexpired, a use left (the coordinator answers it from its registry). Nil: no invitations.
  private var invitationLookup: (([UInt8]) -> String?)?
  /// At most this many invitation connections are admitted per minute, whoever makes them.
  public static let invitationsPerMinute = 10
  private var invitationTimes: [Date] = []
  /// The address each invitation's last admitted connection came from, by invitation id.
  private var invitationAddresses: [String: String] = [:]
  /// The User-Id prefix of an invitation's session: "invite:" then the invitation's id in hex.
  public static let invitationPrefix = "invite:"

  /// Every enrolled card (revoked ones included), by name.
  public var cards: [EnrolmentCard] {
    lock.lock(); defer { lock.unlock() }
    return byCurve.values.sorted { $0.name < $1.name }
  }

  public init(cards: [EnrolmentCard] = []) {
    for c in cards { byCurve[c.curvePublic] = c }
  }

  /// Loads every `*.toml` card of a directory, and as compute donors only those of its `invited/` subdirectory
  /// (cards enrolled by invitation, SPEC §2.2).
  public static func load(directory: String) throws -> EnrolmentRegistry {
    func cards(_ dir: String) throws -> [EnrolmentCard] {
      let files = (try? FileManager.default.contentsOfDirectory(atPath: dir))?.filter { $0.hasSuffix(".toml") }.sorted() ?? []
      return try files.map { try EnrolmentCard.load(dir + "/" + $0) }
    }
    let r = EnrolmentRegistry(cards: try cards(directory))
    for c in try cards(directory + "/" + invitedDirectory) { r.enrol(c, donorOnly: true) }
    return r
  }

  /// The subdirectory of the enrolment directory that holds cards enrolled by invitation.
  public static let invitedDirectory = "invited"

  public func enrol(_ card: EnrolmentCard, donorOnly donor: Bool = false) {
    lock.lock(); defer { lock.unlock() }
    byCurve[card.curvePublic] = card
    revoked.remove(card.fingerprint)
    if donor { donorOnly.insert(card.fingerprint) }
  }

  /// Whether a card was enrolled by invitation: it may join as a compute donor only.
  public func isDonorOnly(_ fingerprint: String) -> Bool {
    lock.lock(); defer { lock.unlock() }
    return donorOnly.contains(fingerprint)
  }

  /// Whether some card, enrolled or revoked, holds this CurveZMQ key or this signing key's fingerprint.
  public func holds(curveKey: [UInt8], fingerprint: String) -> Bool {
    lock.lock(); defer { lock.unlock() }
    return byCurve[curveKey] != nil || byCurve.values.contains { $0.fingerprint == fingerprint }
  }

  /// Admits invitations' keys from now on, as `lookup` says.
  public func acceptInvitations(_ lookup: @escaping ([UInt8]) -> String?) {
    lock.lock(); invitationLookup = lookup; lock.unlock()
  }

  /// The User-Id of a usable invitation's key, within the rate limit; nil otherwise (and why, for the log).
  func admitInvitation(curveKey: [UInt8], address: String, now: Date = Date()) -> (user: String?, why: String) {
    lock.lock()
    let lookup = invitationLookup
    lock.unlock()
    guard let lookup, let id = lookup(curveKey) else { return (nil, "") }
    lock.lock(); defer { lock.unlock() }
    invitationTimes.removeAll { now.timeIntervalSince($0) >= 60 }
    guard invitationTimes.count < EnrolmentRegistry.invitationsPerMinute else {
      return (nil, "invitation \(id.prefix(8)): more than \(EnrolmentRegistry.invitationsPerMinute) invitation connections in a minute (rate limit)")
    }
    invitationTimes.append(now)
    invitationAddresses[id] = address
    return (EnrolmentRegistry.invitationPrefix + id, "invitation \(id.prefix(8))")
  }

  /// The address the last admitted connection of an invitation came from.
  public func invitationAddress(_ id: String) -> String {
    lock.lock(); defer { lock.unlock() }
    return invitationAddresses[id] ?? "an unknown address"
  }

  /// Revokes a node by fingerprint: new connections are refused and observers (the coordinator's live
  /// sessions) are told at once.
  public func revoke(fingerprint: String) {
    lock.lock()
    revoked.insert(fingerprint)
    let card = byCurve.values.first { $0.fingerprint == fingerprint }
    let obs = observers
    lock.unlock()
    if let card { for o in obs { o(card) } }
  }

  public func onRevoke(_ f: @escaping (EnrolmentCard) -> Void) {
    lock.lock(); observers.append(f); lock.unlock()
  }

  /// The card of an enrolled, unrevoked CURVE key; records a refusal otherwise.
  public func admit(curveKey: [UInt8]) -> EnrolmentCard? {
    lock.lock(); defer { lock.unlock() }
    if let c = byCurve[curveKey], !revoked.contains(c.fingerprint) { return c }
    refusals.append(hex(Sodium.blake2b(curveKey)))
    if refusals.count > 1000 { refusals.removeFirst(refusals.count - 1000) }
    return nil
  }

  /// Who a refused CURVE key is, for the operator's log: a revoked member's name and card fingerprint, or, for a
  /// stranger, the key as its card shows it (`curve_public`, Z85), which finds the card a stranger sent.
  public func describeRefused(curveKey: [UInt8]) -> String {
    lock.lock(); defer { lock.unlock() }
    if let c = byCurve[curveKey] { return "\(Printable.line(c.name)) (card fingerprint \(c.fingerprint)) is revoked" }
    return "a key no enrolled card holds (curve_public = \"\(Z85.encode(curveKey) ?? hex(curveKey))\"; not enrolled)"
  }

  public func card(fingerprint: String) -> EnrolmentCard? {
    lock.lock(); defer { lock.unlock() }
    guard !revoked.contains(fingerprint) else { return nil }
    return byCurve.values.first { $0.fingerprint == fingerprint }
  }

  public func isRevoked(_ fingerprint: String) -> Bool {
    lock.lock(); defer { lock.unlock() }
    return revoked.contains(fingerprint)
  }
}

/// The ZeroMQ authentication handler (RFC 27/ZAP) for CURVE: admits a client only if its key is enrolled,
/// and sets the session's User-Id to the node's fingerprint, which every message from it then carries.
///
/// It must be started before the server socket binds; with no handler libzmq lets every client in.
public final class ZAPHandler: @unchecked Sendable {
  public static let endpoint = "inproc://zeromq.zap.01"
  let registry: EnrolmentRegistry
  let log: @Sendable (String) -> Void
  private let stopFlag = ManagedAtomicFlag()
  private var thread: Thread?
  private let ready = DispatchSemaphore(value: 0)
  private let done = DispatchSemaphore(value: 0)
  private var startError: Error?

  public init(registry: EnrolmentRegistry, log: @escaping @Sendable (String) -> Void = { _ in }) {
    self.registry = registry
    self.log = log
  }

  /// Binds the handler socket (synchronously) and serves requests on its own thread until `stop`.
  public func start(context: ZMQContext = .shared) throws {
    let t = Thread { [self] in self.serve(context: context) }
    t.name = "agora-zap"
    thread = t
    t.start()
    ready.wait()
    if let e = startError { throw e }
  }

  /// Stops serving and waits until the handler socket is closed (so another handler may bind).
  public func stop() {
    guard thread != nil, !stopFlag.isSet else { return }
    stopFlag.set()
    done.wait()
  }

  private func serve(context: ZMQContext) {
    let sock: ZMQSocket
    do {
      sock = try ZMQSocket(type: ZMQ_REP, context: context)
      try sock.bind(Self.endpoint)
    } catch {
      startError = error
      ready.signal()
      done.signal()
      return
    }
    ready.signal()
    while !stopFlag.isSet {
      guard let (readable, _) = try? sock.poll(timeoutMillis: 50), readable else { continue }
      guard let req = try? sock.receive(maxFrames: 7) else { continue }
      let f = req.frames.map(\.array)
      // version, request id, domain, address, routing id, mechanism, credentials (the client's public key)
      guard f.count >= 7, f[0] == Array("1.0".utf8) else {
        try? sock.send([Array("1.0".utf8), f.count > 1 ? f[1] : [], Array("500".utf8), Array("malformed ZAP request".utf8), [], []])
        continue
      }
      let mechanism = String(decoding: f[5], as: UTF8.self)
      var status = "400", text = "not enrolled", user = ""
      let address = f[3].isEmpty ? "an unknown address" : Printable.line(String(decoding: f[3], as: UTF8.self))
      if mechanism == "CURVE", f[6].count == 32, let card = registry.admit(curveKey: f[6]) {
        status = "200"; text = "OK"; user = card.fingerprint
      } else if mechanism == "CURVE", f[6].count == 32, case let (invited, why) = registry.admitInvitation(curveKey: f[6], address: address), !why.isEmpty {
        // An invitation's key (SPEC §2.2): its session may only ENROL.
        if let invited {
          status = "200"; text = "OK"; user = invited
          log("\(why): connection from \(address) (key fingerprint \(hex(Sodium.blake2b(f[6])).prefix(16)))")
        } else {
          log("refused CURVE connection from \(address): \(why) (key fingerprint \(hex(Sodium.blake2b(f[6])).prefix(16)))")
        }
      } else {
        let who = mechanism != "CURVE" ? "not CURVE" : f[6].count == 32 ? registry.describeRefused(curveKey: f[6]) : "a malformed key"
        log("refused \(Printable.line(mechanism)) connection from \(address): \(who)")
      }
      try? sock.send([Array("1.0".utf8), f[1], Array(status.utf8), Array(text.utf8), Array(user.utf8), []])
    }
    sock.close()
    done.signal()
  }
}

/// A flag set once from any thread (stop requests, signal handlers).
public final class ManagedAtomicFlag: @unchecked Sendable {
  private let lock = NSLock()
  private var value = false
  public init() {}
  public func set() { lock.lock(); value = true; lock.unlock() }
  public var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

/// A value one thread sets and others read (a heartbeat interval, a test's flag), behind a lock.
public final class Locked<Value>: @unchecked Sendable {
  private let lock = NSLock()
  private var v: Value
  public init(_ v: Value) { self.v = v }
  public var value: Value {
    get { lock.lock(); defer { lock.unlock() }; return v }
    set { lock.lock(); v = newValue; lock.unlock() }
  }
}

/// Card and identity files: an enrolment card is a TOML file (`EnrolmentCard.toml()` writes it).
extension EnrolmentCard {
  public static func load(_ path: String) throws -> EnrolmentCard {
    guard let d = FileManager.default.contents(atPath: path) else { throw IdentityError.io(path, "cannot read") }
    return try parse(toml: String(decoding: d, as: UTF8.self), path: path)
  }

  /// A card from its TOML text (`path` names it in errors).
  public static func parse(toml: String, path: String) throws -> EnrolmentCard {
    let table: TOMLTable
    do { table = try TOMLTable(string: toml) } catch { throw IdentityError.card(path, "not TOML: \(error)") }
    return try parse(path: path, field: { table[$0]?.string }, has: { table[$0] != nil })
  }
}

extension Identity {
  /// Loads the identity in `dir`: its card, and its secret keys checked against the card.
  public static func load(from dir: String) throws -> Identity {
    try load(from: dir, card: try EnrolmentCard.load(dir + "/" + cardFile))
  }
}
