import AgoraRegistry
import Foundation
import Testing

/// The registry's side of invitations (SPEC §2.2): a use is taken only by an enrolment that passes every check,
/// in the same transaction that records the donor; a refusal changes nothing.
@Suite struct InvitationRegistryTests {
  func donor(_ n: Int) -> NodeRecord {
    NodeRecord(fingerprint: String(repeating: String(n % 10), count: 64), name: "Volunteer \(n)", institution: "compute donor", contact: "",
               role: .institution, languages: [], status: .enrolled, enrolledAt: 1000, revokedAt: nil, signKey: "aa", curveKey: "bb")
  }

  @Test func usesExpiryRevocationAndRepeatsAreEnforcedAtomically() throws {
    let dir = NSTemporaryDirectory() + "agora-invitations-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let store = try Registry(dataDir: dir, federation: "f", create: true)
    let id = String(repeating: "ab", count: 16)
    try store.record(invitation: InvitationRecord(id: id, uses: 2, expiresAt: 5000, createdAt: 1000, inviteKey: "01", token: "t", note: "for the lab"))
    #expect(try store.invitations().first?.status(at: 1500) == "pending")
    #expect(try store.invitation(inviteKey: "01")?.id == id && store.invitation(inviteKey: "02") == nil)

    let first = try store.redeem(invitation: id, node: donor(1), card: "card 1", address: "tcp://10.0.0.1:5000", at: 2000)
    #expect(first.used == 1 && first.status(at: 2000) == "active")
    #expect(try store.nodes().first { $0.fingerprint == donor(1).fingerprint }?.role == .donor, "an invited card is a donor, whatever it said")
    // The same card again: refused, and the second use is not taken.
    #expect(throws: InvitationRefusal.alreadyEnrolled(donor(1).fingerprint)) {
      try store.redeem(invitation: id, node: donor(1), card: "card 1", address: "x", at: 2100)
    }
    #expect(try store.invitations().first?.used == 1)
    // Past its expiry: refused, nothing taken.
    #expect(throws: InvitationRefusal.expired(id, 5000)) { try store.redeem(invitation: id, node: donor(2), card: "card 2", address: "x", at: 5000) }
    #expect(try store.nodes().count == 1)
    _ = try store.redeem(invitation: id, node: donor(2), card: "card 2", address: "x", at: 3000)
    #expect(throws: InvitationRefusal.usedUp(id, 2)) { try store.redeem(invitation: id, node: donor(3), card: "card 3", address: "x", at: 3100) }
    #expect(try store.invitations().first?.status(at: 3100) == "used")
    #expect(try store.invited().map(\.card) == ["card 1", "card 2"])
    #expect(throws: InvitationRefusal.unknown("cdcd")) { try store.redeem(invitation: "cdcd", node: donor(4), card: "c", address: "x", at: 3000) }

    // Revocation, by a prefix of the id; an unknown or ambiguous prefix is an error.
    let other = String(repeating: "cd", count: 16)
    try store.record(invitation: InvitationRecord(id: other, uses: 5, expiresAt: 9000, createdAt: 1000, inviteKey: "03", token: "t", note: ""))
    #expect(throws: InvitationRefusal.unknown("ee00")) { try store.revokeInvitation("ee00") }
    #expect(throws: InvitationRefusal.unknown("ab")) { try store.revokeInvitation("ab") }
    #expect(try store.revokeInvitation("cdcd", at: 4000).revokedAt == 4000)
    #expect(throws: InvitationRefusal.revoked(other)) { try store.redeem(invitation: other, node: donor(5), card: "c", address: "x", at: 4100) }
    #expect(try store.invitations().first { $0.id == other }?.status(at: 4100) == "revoked")
    #expect(try store.events().contains { $0.kind == "invitation revoked" })
  }
}
