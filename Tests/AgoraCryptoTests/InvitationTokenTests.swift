import AgoraCrypto
import AgoraTestSupport
import AgoraWire
import Foundation
import Testing

/// Invitation tokens (SPEC §2.2): 128 octets the coordinator signs for one federation; any changed octet, another
/// federation or another signer fails, and a token of another form is a typed error.
@Suite struct InvitationTokenTests {
  @Test func aTokenVerifiesOnlyAsIssued() throws {
    let dir = NSTemporaryDirectory() + "agora-token-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let coordinator = try Identity.generate(in: dir + "/c", name: "C", institution: "C", contact: "", coordinator: true)
    let stranger = try Identity.generate(in: dir + "/s", name: "S", institution: "S", contact: "", coordinator: true)
    let key = try Sodium.boxKeypair().publicKey
    let expires = Date(timeIntervalSince1970: 1_900_000_000)
    let t = try InvitationToken.issue(federation: "fed", uses: 3, expires: expires, inviteKey: key, signer: coordinator)
    #expect(t.bytes.count == InvitationToken.size && t.expires == 1_900_000_000 && t.uses == 3 && t.inviteKey == key)
    #expect(try InvitationToken.parse(t.bytes) == t)
    #expect(t.verify(federation: "fed", coordinatorKey: coordinator.card.signPublic))
    #expect(!t.verify(federation: "fed2", coordinatorKey: coordinator.card.signPublic), "another federation")
    #expect(!t.verify(federation: "fed", coordinatorKey: stranger.card.signPublic), "another coordinator")
    for i in [6, 9, 20, 40, 100] {
      var b = t.bytes
      b[i] ^= 1
      #expect((try? InvitationToken.parse(b))?.verify(federation: "fed", coordinatorKey: coordinator.card.signPublic) != true, "octet \(i) changed")
    }
    // Forms that are not a token.
    #expect(throws: InvitationError.self) { try InvitationToken.parse(Array(t.bytes.prefix(127))) }
    var b = t.bytes; b[0] = 0x58
    #expect(throws: InvitationError.malformed("not an invitation token (no \"AGIV\")")) { try InvitationToken.parse(b) }
    b = t.bytes; b[5] = 0
    #expect(throws: InvitationError.malformed("invitation role 0: an invitation enrols compute donors (role 1) only")) { try InvitationToken.parse(b) }
    b = t.bytes; b[6] = 0; b[7] = 0
    #expect(throws: InvitationError.self) { try InvitationToken.parse(b) }
    #expect(throws: InvitationError.self) { try InvitationToken.issue(federation: "fed", uses: 0, expires: expires, inviteKey: key, signer: coordinator) }
    #expect(throws: InvitationError.self) { try InvitationToken.issue(federation: "fed", uses: 1001, expires: expires, inviteKey: key, signer: coordinator) }
  }

  /// ENROL's vector is what the SPEC's text says: the token verifies with the coordinator's key (seed 07…07), the
  /// card's signature with the donor's (seed 09…09), over the statement built from the message's own fields.
  @Test func theEnrolVectorFollowsTheText() throws {
    let d = try Data(contentsOf: URL(fileURLWithPath: repoRoot + "/Protocol/vectors/messages.json"))
    let list = (try JSONSerialization.jsonObject(with: d) as! [String: Any])["messages"] as! [[String: Any]]
    let v = try #require(list.first { $0["name"] as? String == "enrol" })
    let inputs = v["inputs"] as! [String: String]
    guard case .enrol(let token, let name, let contact, let signKey, let curveKey, let sig) = try Message.decode((v["frames"] as! [String]).map { unhex($0)! }) else {
      Issue.record("not ENROL"); return
    }
    let coordinator = try Sodium.signKeypair(seed: unhex(inputs["coordinator_sign_seed"]!)!)
    let t = try InvitationToken.parse(token)
    #expect(t.verify(federation: inputs["federation"]!, coordinatorKey: coordinator.publicKey))
    #expect(t.inviteKey == (try Sodium.boxKeypair(seed: unhex(inputs["invite_box_seed"]!)!).publicKey))
    #expect(signKey == (try Sodium.signKeypair(seed: unhex(inputs["donor_sign_seed"]!)!).publicKey))
    #expect(curveKey == (try Sodium.boxKeypair(seed: unhex(inputs["donor_curve_seed"]!)!).publicKey))
    #expect(Sodium.verify(sig, message: EnrolmentStatement.bytes(federation: inputs["federation"]!, token: token, name: name, contact: contact, curveKey: curveKey),
                          publicKey: signKey))
  }
}
