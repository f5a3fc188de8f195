import AgoraCrypto
import AgoraRegistry
import AgoraRounds
import AgoraStorage
import AgoraText
import AgoraTransport
import AgoraWire
import Foundation

/// Invitations (SPEC §2.2): a compute donor holding a token the coordinator signed connects with the invitation's
/// CurveZMQ key, sends ENROL with its new card, and gets ENROLLED with the federation's settings; from then on it
/// is an enrolled donor (its card in `enrolled/invited/`, never an institution), and joins with its own key.
extension CoordinatorService {
  /// Whether this federation takes invitations: not under secure aggregation (every member checks the others'
  /// keys against its own copy of the cards, which a new donor is not in), nor when fine-tuning (no donors).
  public static func invitationsAllowed(_ fed: FederationConfig) -> String? {
    if fed.secureAggregation { return "secure aggregation: every member checks key advertisements against its own copy of the members' cards" }
    if fed.fineTune != nil { return "a fine-tuning federation trains on its members' chat data: it has no compute donors" }
    if fed.modelInit != nil { return "a federation that starts from a pilot checkpoint (model.init): every member holds a copy of it" }
    return nil
  }

  /// The directory of cards enrolled by invitation.
  var invitedDirectory: String { config.enrolled + "/" + EnrolmentRegistry.invitedDirectory }

  /// Where the card of the donor with this fingerprint lies once enrolled by invitation.
  func invitedCardPath(_ fingerprint: String) -> String { invitedDirectory + "/" + String(fingerprint.prefix(16)) + ".toml" }

  /// Rewrites the card of every donor the registry says was enrolled by invitation whose file is missing (the
  /// registry commits first, the file follows), and admits invitations' keys from now on.
  func openInvitations() throws {
    guard CoordinatorService.invitationsAllowed(config.federation) == nil else { return }
    for r in try store.invited() where !enrolment.isDonorOnly(r.node) {
      try writeInvitedCard(r.card, fingerprint: r.node)
      let path = invitedCardPath(r.node)
      enrolment.enrol(try EnrolmentCard.load(path), donorOnly: true)
      log("  rewrote the card of \(Printable.line(r.name)), enrolled by invitation \(r.invitation.prefix(8)) (\(path))")
    }
    let st = store
    enrolment.acceptInvitations { key in
      guard let inv = try? st.invitation(inviteKey: hex(key)) else { return nil }
      let status = inv.status(at: Date().timeIntervalSince1970)
      return status == "pending" || status == "active" ? inv.id : nil
    }
  }

  func writeInvitedCard(_ toml: String, fingerprint: String) throws {
    try FileManager.default.createDirectory(atPath: invitedDirectory, withIntermediateDirectories: true)
    try AtomicFile.write(to: invitedCardPath(fingerprint)) { try $0.write(contentsOf: Data(toml.utf8)) }
  }

  /// A message on an invitation's session: ENROL is checked and, if everything holds, the card is enrolled and
  /// answered ENROLLED; anything else, or a failed check, is answered ERROR(14) naming why.
  func takeInvitee(_ m: Inbound) {
    let id = String(m.userID.dropFirst(EnrolmentRegistry.invitationPrefix.count))
    let address = enrolment.invitationAddress(id)
    func refuse(_ why: String) {
      endpoint.send(.error(code: ErrorCode.invitation.rawValue, message: why, subject: .none), to: m.peer)
      log("  invitation \(id.prefix(8)): refused an enrolment from \(address): \(why)")
    }
    guard case .success(let msg) = m.message else {
      if case .failure(let e) = m.message { refuse("malformed message: \(e)") }
      return
    }
    guard case .enrol(let tokenBytes, let name, let contact, let signKey, let curveKey, let signature) = msg else {
      refuse("an invitation's session carries ENROL only, not \(msg.type)")
      return
    }
    let fed = config.federation
    let token: InvitationToken
    do { token = try InvitationToken.parse(tokenBytes) } catch { refuse("\(error)"); return }
    guard token.verify(federation: fed.id, coordinatorKey: identity.card.signPublic) else {
      refuse("the invitation's token is not signed by this coordinator for federation \(fed.id)")
      return
    }
    guard token.idHex == id, let inv = try? store.invitation(inviteKey: hex(token.inviteKey)), inv.id == id, inv.token == hex(tokenBytes) else {
      refuse("the token is not the one this invitation's key was issued with")
      return
    }
    guard Sodium.verify(signature, message: EnrolmentStatement.bytes(federation: fed.id, token: tokenBytes, name: name, contact: contact, curveKey: curveKey),
                        publicKey: signKey) else {
      refuse("the card's signature does not verify with its signing key")
      return
    }
    guard Printable.line(name) == name, Printable.line(contact) == contact, !name.trimmingCharacters(in: .whitespaces).isEmpty else {
      refuse("a card's name and contact are one line of printable text")
      return
    }
    let fingerprint = hex(Envelope.fingerprint(signKey))
    guard !enrolment.holds(curveKey: curveKey, fingerprint: fingerprint), curveKey != identity.card.curvePublic else {
      refuse("a card with this signing or CurveZMQ key is already enrolled")
      return
    }
    let card = EnrolmentCard(name: name, institution: "compute donor (invitation \(id.prefix(8)))", contact: contact, signPublic: signKey,
                             curvePublic: curveKey, aggregationPublic: nil, created: Date())
    let bundle: DonorBundle
    do {
      bundle = try DonorBundle(federation: fed, tokenizer: tokenizerAnswerJSON)
    } catch {
      refuse("the coordinator cannot give its settings (\(error))")
      return
    }
    let node = NodeRecord(fingerprint: fingerprint, name: name, institution: card.institution, contact: contact, role: .donor, languages: [],
                          status: .enrolled, enrolledAt: Date().timeIntervalSince1970, revokedAt: nil, signKey: hex(signKey), curveKey: hex(curveKey))
    let redeemed: InvitationRecord
    do {
      redeemed = try store.redeem(invitation: id, node: node, card: card.toml(), address: address)
    } catch let r as InvitationRefusal {
      refuse(r.description)
      return
    } catch {
      refuse("the registry could not record it (\(error))")
      return
    }
    do {
      try writeInvitedCard(card.toml(), fingerprint: fingerprint)
    } catch {
      // The registry holds it: the card is rewritten at the next start.
      log("  invitation \(id.prefix(8)): the card of \(Printable.line(name)) could not be written (\(error)); it is enrolled and will be rewritten at the next start")
    }
    enrolment.enrol(card, donorOnly: true)
    endpoint.send(.enrolled(node: Envelope.fingerprint(signKey), payload: Payload(bundle.json)), to: m.peer)
    log("  enrolled \(Printable.line(name)) (card fingerprint \(fingerprint.prefix(16))) as a compute donor by invitation \(id.prefix(8)), use \(redeemed.used) of \(redeemed.uses), from \(address)")
  }

  /// The federation's tokenizer.json, as TOKENIZER serves it.
  var tokenizerAnswerJSON: [UInt8] {
    if case .tokenizer(_, _, let p) = tokenizerAnswer { return p.array }
    return []
  }
}

/// Issuing invitations (`agora invite`), on the coordinator's machine: the registry records each (a running
/// coordinator reads it when an invitee connects), the file goes to the donor.
public enum Invitations {
  /// A new invitation for `config`'s federation: a fresh invitation key, the token signed by the coordinator's
  /// identity, recorded in the registry (created if the coordinator has not run yet).
  public static func issue(config: CoordinatorConfig, uses: Int, expires: Date, note: String) throws -> (InvitationRecord, InvitationFile) {
    let fed = config.federation
    if let why = CoordinatorService.invitationsAllowed(fed) {
      throw ConfigError(file: fed.path, key: "-", problem: "this federation takes no invitations: \(why)")
    }
    guard expires > Date() else { throw InvitationError.invalid("it would expire at \(ISO8601DateFormatter().string(from: expires)), which has passed") }
    let identity = try Identity.load(from: config.identity)
    guard identity.card.aggregationPublic != nil else {
      throw ConfigError(file: config.identity, key: "-", problem: "not a coordinator identity (no aggregation key)")
    }
    let cardText = try String(contentsOfFile: config.identity + "/" + Identity.cardFile, encoding: .utf8)
    try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true)
    let store = try Registry(dataDir: config.dataDir, federation: fed.id, create: true)
    let keys = try Sodium.boxKeypair()
    let token = try InvitationToken.issue(federation: fed.id, uses: uses, expires: expires, inviteKey: keys.publicKey, signer: identity)
    let record = InvitationRecord(id: token.idHex, uses: uses, expiresAt: Double(token.expires), createdAt: Date().timeIntervalSince1970,
                                  inviteKey: hex(keys.publicKey), token: hex(token.bytes), note: note)
    try store.record(invitation: record)
    let dashboard = config.dashboard.map { "http://\($0.host == "0.0.0.0" ? "127.0.0.1" : $0.host):\($0.port)" }
    return (record, InvitationFile(federation: fed.id, endpoint: fed.endpoint, token: token, inviteSecret: keys.secretKey, coordinatorCard: cardText,
                                   dashboard: dashboard))
  }
}
