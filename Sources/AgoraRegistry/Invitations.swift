import Foundation
import GRDB

/// An invitation the coordinator issued (SPEC §2.2): a signed token that lets whoever holds it enrol a compute
/// donor's card, `uses` times, until `expiresAt`, unless revoked.
public struct InvitationRecord: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "invitations"
  /// The token's id, hex (32 digits).
  public var id: String
  /// "donor": the only role an invitation gives.
  public var role: String
  public var uses: Int
  public var used: Int
  public var expiresAt: Double
  public var createdAt: Double
  public var revokedAt: Double?
  /// The invitation's CurveZMQ public key, hex: the key an invitee connects with to enrol.
  public var inviteKey: String
  /// The whole token, hex.
  public var token: String
  /// Whom it was made for (the operator's note; never sent).
  public var note: String

  public init(id: String, uses: Int, expiresAt: Double, createdAt: Double, inviteKey: String, token: String, note: String) {
    self.id = id; role = "donor"; self.uses = uses; used = 0; self.expiresAt = expiresAt; self.createdAt = createdAt; revokedAt = nil
    self.inviteKey = inviteKey; self.token = token; self.note = note
  }

  /// Where it stands at `now`: "revoked", "expired", "used" (every use taken), "active" (some taken) or "pending".
  public func status(at now: Double) -> String {
    if revokedAt != nil { return "revoked" }
    if now >= expiresAt { return "expired" }
    if used >= uses { return "used" }
    return used > 0 ? "active" : "pending"
  }

  enum CodingKeys: String, CodingKey {
    case id, role, uses, used, expiresAt = "expires_at", createdAt = "created_at", revokedAt = "revoked_at", inviteKey = "invite_key", token, note
  }
}

/// A donor enrolled by an invitation: its card as it arrived, and from where.
public struct InvitedRecord: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "invited"
  public var node: String
  public var invitation: String
  public var name: String
  /// The card's TOML, as the coordinator wrote it into its enrolment directory.
  public var card: String
  public var address: String
  public var at: Double

  public init(node: String, invitation: String, name: String, card: String, address: String, at: Double) {
    self.node = node; self.invitation = invitation; self.name = name; self.card = card; self.address = address; self.at = at
  }
}

/// Why an invitation cannot enrol a card (SPEC §2.2); each is answered `ERROR(14)` with this text.
public enum InvitationRefusal: Error, Equatable, CustomStringConvertible {
  case unknown(String)
  case revoked(String)
  case expired(String, Double)
  case usedUp(String, Int)
  case alreadyEnrolled(String)

  public var description: String {
    switch self {
    case .unknown(let id): return "invitation \(id.prefix(8)) is not one this coordinator issued"
    case .revoked(let id): return "invitation \(id.prefix(8)) was revoked"
    case .expired(let id, let at):
      return "invitation \(id.prefix(8)) expired at \(ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: at)))"
    case .usedUp(let id, let n): return "invitation \(id.prefix(8)) has been used \(n) time\(n == 1 ? "" : "s"), all it allows"
    case .alreadyEnrolled(let f): return "a card with fingerprint \(f.prefix(16)) is already enrolled"
    }
  }
}

extension Registry {
  public func record(invitation: InvitationRecord) throws {
    try db.write { db in
      try invitation.insert(db)
      try Registry.insertEvent(db, "invitation", invitation.id, "\(invitation.role), \(invitation.uses) use\(invitation.uses == 1 ? "" : "s"), until "
                                 + ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: invitation.expiresAt))
                                 + (invitation.note.isEmpty ? "" : " (\(invitation.note))"))
    }
  }

  /// Every invitation, newest first.
  public func invitations() throws -> [InvitationRecord] {
    try db.read { try InvitationRecord.order(Column("created_at").desc).fetchAll($0) }
  }

  /// The invitation whose CurveZMQ key is `inviteKey` (hex), if any.
  public func invitation(inviteKey: String) throws -> InvitationRecord? {
    try db.read { try InvitationRecord.filter(Column("invite_key") == inviteKey).fetchOne($0) }
  }

  /// Revokes the invitation whose id starts with `prefix` (at least 4 digits, one match); returns it.
  public func revokeInvitation(_ prefix: String, at now: Double = Date().timeIntervalSince1970) throws -> InvitationRecord {
    try db.write { db in
      let p = prefix.lowercased()
      guard p.count >= 4, p.allSatisfy(\.isHexDigit) else { throw InvitationRefusal.unknown(prefix) }
      let all = try InvitationRecord.filter(Column("id").like(p + "%")).fetchAll(db)
      guard all.count == 1, var inv = all.first else { throw InvitationRefusal.unknown(prefix) }
      if inv.revokedAt == nil {
        inv.revokedAt = now
        try inv.update(db)
        try Registry.insertEvent(db, "invitation revoked", inv.id, "\(inv.used) of \(inv.uses) uses taken")
      }
      return inv
    }
  }

  /// Enrols a donor's card by invitation `id`, in one transaction: the invitation must be unrevoked, unexpired at
  /// `now` and have a use left, and the card's fingerprint new; one use is taken, the donor recorded (role donor)
  /// with the card's TOML and the address it came from. Throws `InvitationRefusal` and changes nothing otherwise.
  public func redeem(invitation id: String, node: NodeRecord, card: String, address: String, at now: Double = Date().timeIntervalSince1970) throws -> InvitationRecord {
    try db.write { db in
      guard var inv = try InvitationRecord.fetchOne(db, key: id) else { throw InvitationRefusal.unknown(id) }
      if inv.revokedAt != nil { throw InvitationRefusal.revoked(id) }
      if now >= inv.expiresAt { throw InvitationRefusal.expired(id, inv.expiresAt) }
      if inv.used >= inv.uses { throw InvitationRefusal.usedUp(id, inv.used) }
      if try NodeRecord.fetchOne(db, key: node.fingerprint) != nil { throw InvitationRefusal.alreadyEnrolled(node.fingerprint) }
      inv.used += 1
      try inv.update(db)
      var n = node
      n.role = .donor
      try n.insert(db)
      try InvitedRecord(node: n.fingerprint, invitation: id, name: n.name, card: card, address: address, at: now).insert(db)
      try Registry.insertEvent(db, "enrolled", n.fingerprint, "\(n.name) as donor by invitation \(id.prefix(8)) (use \(inv.used) of \(inv.uses)) from \(address)")
      return inv
    }
  }

  /// Every donor enrolled by invitation, oldest first.
  public func invited() throws -> [InvitedRecord] {
    try db.read { try InvitedRecord.order(Column("at")).fetchAll($0) }
  }
}
