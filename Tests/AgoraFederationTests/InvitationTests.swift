import AgoraCrypto
import AgoraHarness
import AgoraRounds
import AgoraTestSupport
import AgoraTransport
import AgoraWire
import Foundation
import Testing

/// Donors in one command (SPEC §2.2, issue 37): `agora invite` writes an invitation, `agora donate` enrols with it
/// over the coordinator's CURVE channel and trains as a compute donor. An invitation is spent, revoked or forged
/// in vain, and a card enrolled by invitation never joins as an institution.
@Suite(.serialized) struct InvitationTests {
  func invite(_ h: Harness, _ out: String, uses: Int = 1) throws -> String {
    let (status, text) = try h.run(["invite", "--config", h.dir + "/coordinator.toml", "--uses", String(uses), "--expires", "1h", "--note", "test", "--out", h.dir + "/" + out])
    #expect(status == 0, "\(text)")
    let attributes = try FileManager.default.attributesOfItem(atPath: h.dir + "/" + out)
    #expect((attributes[.posixPermissions] as? Int) == 0o600, "an invitation is a secret: mode 0600")
    return String(text.split(separator: " ")[1])
  }

  /// The answer to one message on a session made with an invitation's key (nil: no answer in `seconds`).
  func answer(_ h: Harness, _ file: InvitationFile, _ message: (InvitationFile) throws -> Message, seconds: Double = 10) throws -> Message? {
    let card = try EnrolmentCard.parse(toml: file.coordinatorCard, path: "card")
    let ep = try Endpoint.client(connect: file.endpoint, serverKey: card.curvePublic, keys: CurveKeys(publicKey: file.token.inviteKey, secretKey: file.inviteSecret))
    defer { ep.close() }
    ep.send(try message(file))
    guard case .success(let m)? = ep.receive(timeout: seconds)?.message else { return nil }
    return m
  }

  @Test func aDonorJoinsWithOneCommandAndInvitationsCannotBeReusedRevokedOrForged() throws {
    let h = try Harness(nodes: [("north", ["de", "sv"])], rounds: 3, innerSteps: 20, minNodes: 2, extra: "[public]\ndata = [\"public\"]")
    defer { h.cleanup() }
    try Harness.publicCorpus(in: h.dir)
    // A dashboard, which the invitation names: the donor reads its rank there.
    let dashboard = freeLocalPort()
    try (h.read("coordinator.toml") + "\ndashboard = \"127.0.0.1:\(dashboard)\"\n")
      .write(toFile: h.dir + "/coordinator.toml", atomically: true, encoding: .utf8)
    _ = try invite(h, "inv.toml")
    #expect(try String(contentsOfFile: h.dir + "/inv.toml", encoding: .utf8).contains("http://127.0.0.1:\(dashboard)"))
    let revoked = try invite(h, "revoked.toml")
    _ = try invite(h, "forged.toml", uses: 5)
    let (rs, rt) = try h.run(["invite", "--config", h.dir + "/coordinator.toml", "--revoke", String(revoked.prefix(8))])
    #expect(rs == 0 && rt.contains("revoked"), "\(rt)")
    let c = try h.coordinator()
    defer { if c.isRunning { c.terminate() } }

    // Enrol only: keys, ENROL, the federation's settings written.
    let (es, et) = try h.run(["donate", h.dir + "/inv.toml", "--dir", h.dir + "/donor", "--name", "Volunteer", "--enrol-only"])
    #expect(es == 0 && et.contains("enrolled in test-federation as a compute donor"), "\(et)")
    for f in ["node.toml", "federation.toml", "tokenizer.json", "coordinator.toml", "identity/card.toml"] {
      #expect(FileManager.default.fileExists(atPath: h.dir + "/donor/" + f), "\(f)")
    }
    let fed = try String(contentsOfFile: h.dir + "/donor/federation.toml", encoding: .utf8)
    #expect(!fed.contains("eval_data") && fed.contains("coordinator.toml"), "the coordinator's own paths stay with it: \(fed)")
    let donorCard = try EnrolmentCard.load(h.dir + "/donor/identity/card.toml")
    #expect(FileManager.default.fileExists(atPath: h.dir + "/keys/enrolled/invited/" + donorCard.fingerprint.prefix(16) + ".toml"))
    #expect(h.read("coordinator.log").contains("enrolled Volunteer (card fingerprint \(donorCard.fingerprint.prefix(16))) as a compute donor by invitation"))

    // Spent (1 use): the key is no longer admitted, which CurveZMQ shows as silence.
    let (ss, st) = try h.run(["donate", h.dir + "/inv.toml", "--dir", h.dir + "/donor2", "--timeout", "3", "--enrol-only"])
    #expect(ss != 0 && st.contains("no answer"), "\(st)")
    // Revoked: the same.
    let (vs, vt) = try h.run(["donate", h.dir + "/revoked.toml", "--dir", h.dir + "/donor3", "--timeout", "3", "--enrol-only"])
    #expect(vs != 0 && vt.contains("no answer"), "\(vt)")

    // A usable invitation's key with a forged token, a card whose signature fails, or another message: ERROR(14).
    let forged = try InvitationFile.load(h.dir + "/forged.toml")
    let someone = try Identity.generate(in: h.dir + "/keys/someone", name: "Someone", institution: "S", contact: "", coordinator: false)
    func enrol(token: [UInt8], proofBy signer: Identity) throws -> Message {
      let proof = try Sodium.sign(EnrolmentStatement.bytes(federation: "test-federation", token: token, name: "Someone", contact: "", curveKey: someone.card.curvePublic),
                                  secretKey: signer.signSecret)
      return .enrol(token: token, name: "Someone", contact: "", signKey: someone.card.signPublic, curveKey: someone.card.curvePublic, signature: proof)
    }
    var bad = forged.token.bytes
    bad[127] ^= 1
    guard case .error(14, let t1, _)? = try answer(h, forged, { _ in try enrol(token: bad, proofBy: someone) }) else { Issue.record("forged token"); return }
    #expect(t1.contains("not signed by this coordinator"), "\(t1)")
    guard case .error(14, let t2, _)? = try answer(h, forged, { f in try enrol(token: f.token.bytes, proofBy: try donorIdentity(h)) }) else {
      Issue.record("a card signed by another key"); return
    }
    #expect(t2.contains("signature does not verify"), "\(t2)")
    guard case .error(14, let t3, _)? = try answer(h, forged, { _ in .heartbeat }) else { Issue.record("heartbeat"); return }
    #expect(t3.contains("ENROL only"), "\(t3)")
    // A card whose name is not one line of printable text (a terminal escape in it), signed and with a valid token:
    // refused, and no use of the invitation is taken.
    let escape = "Some\u{1B}[2Jone"
    let proof = try Sodium.sign(EnrolmentStatement.bytes(federation: "test-federation", token: forged.token.bytes, name: escape, contact: "", curveKey: someone.card.curvePublic),
                                secretKey: someone.signSecret)
    guard case .error(14, let t5, _)? = try answer(h, forged, { f in
      .enrol(token: f.token.bytes, name: escape, contact: "", signKey: someone.card.signPublic, curveKey: someone.card.curvePublic, signature: proof)
    }) else { Issue.record("a name with a control character"); return }
    #expect(t5.contains("printable"), "\(t5)")
    #expect(try h.run(["invite", "--config", h.dir + "/coordinator.toml", "--list"]).1.contains("0/5"), "no use of the forged-at invitation was taken")

    // The invited card asks for an institution's role: refused.
    let me = try donorIdentity(h)
    let server = try EnrolmentCard.load(h.dir + "/keys/coordinator/card.toml")
    let ep = try Endpoint.client(connect: "tcp://127.0.0.1:\(h.port)", serverKey: server.curvePublic, keys: CurveKeys(publicKey: me.card.curvePublic, secretKey: me.curveSecret))
    ep.send(.join(name: "Volunteer", software: "test", latestVersion: [UInt8](repeating: 0, count: 32), role: 0, terms: try h.terms()))
    guard case .success(.error(14, let t4, _))? = ep.receive(timeout: 10)?.message else { Issue.record("JOIN as an institution"); ep.close(); return }
    ep.close()
    #expect(t4.contains("compute donor"), "\(t4)")

    // Now it donates (again from its directory, no invitation needed) beside an institution: every round has both.
    let north = try h.node("north")
    let donor = try h.start(["donate", "--dir", h.dir + "/donor"], log: "donor.log")
    let finished = h.wait(c, seconds: 240)
    _ = h.wait(north, seconds: 15)
    _ = h.wait(donor, seconds: 15)
    let log = h.read("coordinator.log")
    #expect(finished && c.terminationStatus == 0, "\(log)")
    #expect(log.contains("Volunteer (\(donorCard.fingerprint.prefix(12))) joined as a compute donor"), "\(log)")
    let rows = log.split(separator: "\n").filter { $0.hasPrefix("    ") && $0.contains("|") }
    #expect(rows.count == 3 && rows.allSatisfy { $0.contains(" 2/2 ") }, "\(rows)")
    let progress = h.read("donor.log").split(separator: "\n").filter { $0.hasPrefix("donated: round") }
    #expect(progress.count == 3 && progress.last!.contains("3 rounds, 60 steps"), "\(h.read("donor.log"))")
    // Round 2's line at the latest: by then round 1's contributions are in the registry the dashboard reads.
    #expect(progress.dropFirst().contains { $0.contains("rank ") && $0.contains("of 2 contributors by tokens") }, "the dashboard answered: \(progress)")
    let list = try h.run(["invite", "--config", h.dir + "/coordinator.toml", "--list"]).1
    #expect(list.contains("used") && list.contains("revoked") && list.contains("enrolled Volunteer"), "\(list)")
  }

  func donorIdentity(_ h: Harness) throws -> Identity { try Identity.load(from: h.dir + "/donor/identity") }
}
