import AgoraCrypto
import AgoraRounds
import AgoraStorage
import AgoraText
import AgoraTransport
import AgoraWire
import Foundation

/// Why a donor could not enrol with an invitation (SPEC §2.2).
public enum EnrolmentFailure: Error, Equatable, CustomStringConvertible {
  /// The coordinator answered ERROR: the invitation or the card cannot be enrolled, and why.
  case refused(code: UInt16, reason: String)
  /// No answer in time. CurveZMQ says nothing when the server key is wrong or the key is refused, so this is
  /// also what an expired, revoked or used-up invitation looks like before it reaches the coordinator's checks.
  case noAnswer(endpoint: String, seconds: Double)
  case unexpected(String)

  public var description: String {
    switch self {
    case .refused(let code, let reason): return "the coordinator refused the enrolment (ERROR \(code)): \(Printable.line(reason, limit: 1024))"
    case .noAnswer(let e, let s):
      return String(format: "no answer from %@ in %.0f s: the coordinator is not running there, or it does not admit this invitation's key "
                    + "(revoked, expired, used up, or more than %d invitation connections a minute); CurveZMQ refuses silently", e, s, EnrolmentRegistry.invitationsPerMinute)
    case .unexpected(let s): return "unexpected answer to ENROL: \(s)"
    }
  }
}

/// The invitee's side of an enrolment: connect with the invitation's key, ENROL the card, take ENROLLED.
public enum InvitationClient {
  public static func enrol(_ invite: InvitationFile, identity: Identity, timeout: Double = 30) throws -> DonorBundle {
    let server = try EnrolmentCard.parse(toml: invite.coordinatorCard, path: "the invitation's coordinator_card")
    let ep = try Endpoint.client(connect: invite.endpoint, serverKey: server.curvePublic,
                                 keys: CurveKeys(publicKey: invite.token.inviteKey, secretKey: invite.inviteSecret))
    defer { ep.close() }
    let card = identity.card
    let token = invite.token.bytes
    let proof = try Sodium.sign(EnrolmentStatement.bytes(federation: invite.federation, token: token, name: card.name, contact: card.contact,
                                                         curveKey: card.curvePublic), secretKey: identity.signSecret)
    ep.send(.enrol(token: token, name: card.name, contact: card.contact, signKey: card.signPublic, curveKey: card.curvePublic, signature: proof))
    guard let m = ep.receive(timeout: timeout) else { throw EnrolmentFailure.noAnswer(endpoint: invite.endpoint, seconds: timeout) }
    switch m.message {
    case .success(.enrolled(let node, let payload)):
      guard node == card.nodeID else { throw EnrolmentFailure.unexpected("ENROLLED names node \(hex(node).prefix(16)), not this card's \(card.fingerprint.prefix(16))") }
      return try DonorBundle.parse(payload.array)
    case .success(.error(let code, let text, _)): throw EnrolmentFailure.refused(code: code, reason: text)
    case .success(let other): throw EnrolmentFailure.unexpected("\(other.type)")
    case .failure(let e): throw EnrolmentFailure.unexpected("a malformed message (\(e))")
    }
  }
}

/// A donor's directory after `agora donate` (SPEC §2.2): its identity, the coordinator's card, the federation's
/// settings and tokenizer from ENROLLED, and `node.toml` (written last: a directory that has it is enrolled).
public enum DonorDirectory {
  public static let nodeFile = "node.toml"
  public static let identityDir = "identity"

  /// Enrols a new donor in `dir` with `invite` (keys made there first), or finds the one enrolled there before.
  /// Returns the path of its node.toml and whether it was enrolled now.
  public static func prepare(invite: InvitationFile, dir: String, name: String, contact: String, timeout: Double = 30) throws -> (node: String, new: Bool) {
    let fm = FileManager.default
    let nodePath = dir + "/" + nodeFile
    if fm.fileExists(atPath: nodePath) { return (nodePath, false) }
    try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let idDir = dir + "/" + identityDir
    let identity = fm.fileExists(atPath: idDir + "/" + Identity.cardFile)
      ? try Identity.load(from: idDir)
      : try Identity.generate(in: idDir, name: name, institution: "compute donor", contact: contact, coordinator: false)
    let bundle = try InvitationClient.enrol(invite, identity: identity, timeout: timeout)
    func write(_ file: String, _ bytes: [UInt8]) throws {
      try AtomicFile.write(to: dir + "/" + file) { try $0.write(contentsOf: Data(bytes)) }
    }
    try write(DonorBundle.cardFile, Array(invite.coordinatorCard.utf8))
    try write(DonorBundle.tokenizerFile, bundle.tokenizerJSON)
    try write(DonorBundle.federationFile, Array(bundle.federationTOML.utf8))
    let node = """
      # A compute donor enrolled by invitation \(invite.token.idHex.prefix(8)) (agora donate): it trains on the public shards the
      # coordinator assigns. Run it again with: agora donate --dir \(dir)
      [node]
      name = \(jsonString(identity.card.name))
      federation = "\(DonorBundle.federationFile)"
      identity = "\(identityDir)"
      donor = true
      work = "work"

      """
    try write(nodeFile, Array(node.utf8))
    return (nodePath, true)
  }
}
