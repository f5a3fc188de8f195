import AgoraWire
import Foundation

/// An invitation's token (SPEC §2.2): what the coordinator signs to let whoever holds the invitation enrol as a
/// compute donor, `uses` times, until `expires`. 128 octets:
///
///     "AGIV" ‖ version u8 (1) ‖ role u8 (1: donor) ‖ uses u16 ‖ expires u64 (Unix seconds) ‖ id 16
///       ‖ invitation key 32 (X25519: the CurveZMQ client key an invitee enrols with) ‖ signature 64
///
/// integers little-endian; the signature is the coordinator's Ed25519 over
/// "AGORA-INVITE-v1" ‖ u8 length ‖ federation ‖ the first 64 octets.
public struct InvitationToken: Equatable, Sendable {
  public static let size = 128
  public static let signedSize = 64
  public static let magic: [UInt8] = Array("AGIV".utf8)
  public static let version: UInt8 = 1
  /// The only role an invitation can give: a compute donor (JOIN's role 1). Institutions enrol by card.
  public static let donor: UInt8 = 1
  public static let maxUses = 1000

  public var role: UInt8
  public var uses: UInt16
  public var expires: UInt64
  public var id: [UInt8]
  public var inviteKey: [UInt8]
  public var signature: [UInt8]

  public var idHex: String { hex(id) }
  public var expiryDate: Date { Date(timeIntervalSince1970: TimeInterval(expires)) }

  /// The first 64 octets: what the signature covers (after the statement's prefix).
  public var signedPart: [UInt8] {
    var b = InvitationToken.magic + [InvitationToken.version, role]
    b += [UInt8(uses & 0xff), UInt8(uses >> 8)]
    for i in 0..<8 { b.append(UInt8((expires >> (8 * UInt64(i))) & 0xff)) }
    return b + id + inviteKey
  }

  public var bytes: [UInt8] { signedPart + signature }

  /// "AGORA-INVITE-v1" ‖ u8 length ‖ federation ‖ the token's first 64 octets.
  public static func statement(federation: String, signedPart: [UInt8]) -> [UInt8] {
    Array("AGORA-INVITE-v1".utf8) + [UInt8(federation.utf8.count)] + Array(federation.utf8) + signedPart
  }

  /// A new token, signed by the coordinator's identity.
  public static func issue(federation: String, uses: Int, expires: Date, inviteKey: [UInt8], signer: Identity,
                           id: [UInt8]? = nil) throws -> InvitationToken {
    guard (1...maxUses).contains(uses) else { throw InvitationError.invalid("uses must be 1 to \(maxUses), not \(uses)") }
    guard inviteKey.count == 32 else { throw InvitationError.invalid("an invitation key is 32 octets") }
    guard federation.utf8.count <= 255 else { throw InvitationError.invalid("the federation's id is longer than 255 octets") }
    let secs = expires.timeIntervalSince1970
    guard secs.isFinite, secs > 0 else { throw InvitationError.invalid("expiry \(expires) is not a time after 1970") }
    var t = InvitationToken(role: donor, uses: UInt16(uses), expires: UInt64(secs.rounded(.down)), id: id ?? Sodium.randomBytes(16),
                            inviteKey: inviteKey, signature: [])
    t.signature = try Sodium.sign(statement(federation: federation, signedPart: t.signedPart), secretKey: signer.signSecret)
    return t
  }

  /// Reads a token's form (not its signature: `verify`).
  public static func parse(_ b: [UInt8]) throws -> InvitationToken {
    guard b.count == size else { throw InvitationError.malformed("an invitation token is \(size) octets, not \(b.count)") }
    guard Array(b[0..<4]) == magic else { throw InvitationError.malformed("not an invitation token (no \"AGIV\")") }
    guard b[4] == version else { throw InvitationError.malformed("invitation token version \(b[4]), expected \(version)") }
    guard b[5] == donor else { throw InvitationError.malformed("invitation role \(b[5]): an invitation enrols compute donors (role 1) only") }
    let uses = UInt16(b[6]) | UInt16(b[7]) << 8
    guard uses >= 1, Int(uses) <= maxUses else { throw InvitationError.malformed("invitation uses \(uses), expected 1 to \(maxUses)") }
    var expires: UInt64 = 0
    for i in 0..<8 { expires |= UInt64(b[8 + i]) << (8 * UInt64(i)) }
    return InvitationToken(role: b[5], uses: uses, expires: expires, id: Array(b[16..<32]), inviteKey: Array(b[32..<64]),
                           signature: Array(b[64..<128]))
  }

  /// Whether the coordinator whose signing key is `coordinatorKey` signed this token for `federation`.
  public func verify(federation: String, coordinatorKey: [UInt8]) -> Bool {
    Sodium.verify(signature, message: InvitationToken.statement(federation: federation, signedPart: signedPart), publicKey: coordinatorKey)
  }
}

/// What an invitee's ENROL proves (SPEC §2.2): that it holds the signing key of the card it enrols, for this
/// token. Its Ed25519 signature covers "AGORA-ENROL-v1" ‖ u8 length ‖ federation ‖ token (128) ‖ u16 length ‖
/// name ‖ u16 length ‖ contact ‖ CurveZMQ public key (32).
public enum EnrolmentStatement {
  public static func bytes(federation: String, token: [UInt8], name: String, contact: String, curveKey: [UInt8]) -> [UInt8] {
    func string(_ s: String) -> [UInt8] { let u = Array(s.utf8); return [UInt8(u.count & 0xff), UInt8(u.count >> 8)] + u }
    return Array("AGORA-ENROL-v1".utf8) + [UInt8(federation.utf8.count)] + Array(federation.utf8) + token + string(name) + string(contact) + curveKey
  }
}

public enum InvitationError: Error, Equatable, CustomStringConvertible {
  case malformed(String)
  case invalid(String)

  public var description: String {
    switch self {
    case .malformed(let s): return "malformed invitation: \(s)"
    case .invalid(let s): return "invalid invitation: \(s)"
    }
  }
}
