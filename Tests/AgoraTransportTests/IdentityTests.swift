import AgoraCrypto
import AgoraTestSupport
import AgoraTransport
import Foundation
import Testing

/// Identities and enrolment cards on disk (keys in AgoraCrypto, card files read here in AgoraTransport).
@Suite struct IdentityTests {
  func dir() -> String { NSTemporaryDirectory() + "agora-id-\(UUID().uuidString)" }

  @Test func keygenWritesPrivateKeysAndACardThatLoads() throws {
    let d = dir()
    defer { try? FileManager.default.removeItem(atPath: d) }
    let id = try Identity.generate(in: d, name: "Charles University", institution: "Univerzita \"Karlova\"\t\u{7F}", contact: "ops@example.org", coordinator: true)
    for f in [Identity.signFile, Identity.curveFile, Identity.aggregationFile] {
      let mode = (try FileManager.default.attributesOfItem(atPath: d + "/" + f)[.posixPermissions] as! NSNumber).intValue
      #expect(mode == 0o600, "\(f) has mode \(String(mode, radix: 8))")
    }
    let back = try Identity.load(from: d)
    #expect(back.card == EnrolmentCard(name: id.card.name, institution: id.card.institution, contact: id.card.contact, signPublic: id.card.signPublic,
                                       curvePublic: id.card.curvePublic, aggregationPublic: id.card.aggregationPublic, created: back.card.created))
    #expect(back.signSecret == id.signSecret)
    #expect(throws: IdentityError.exists(d + "/" + Identity.signFile)) {
      _ = try Identity.generate(in: d, name: "again", institution: "", contact: "", coordinator: false)
    }
    #expect(try Identity.load(from: d).signSecret == id.signSecret, "the refused second keygen left the keys alone")
  }

  @Test func loadRejectsInsecureMismatchedAndCorruptFiles() throws {
    let d = dir()
    defer { try? FileManager.default.removeItem(atPath: d) }
    _ = try Identity.generate(in: d, name: "N", institution: "N", contact: "", coordinator: false)
    chmod(d + "/" + Identity.signFile, 0o644)
    #expect(throws: IdentityError.insecure(d + "/" + Identity.signFile, "644")) { _ = try Identity.load(from: d) }
    chmod(d + "/" + Identity.signFile, 0o600)
    let other = dir()
    defer { try? FileManager.default.removeItem(atPath: other) }
    _ = try Identity.generate(in: other, name: "M", institution: "M", contact: "", coordinator: false)
    try FileManager.default.removeItem(atPath: d + "/" + Identity.curveFile)
    try FileManager.default.copyItem(atPath: other + "/" + Identity.curveFile, toPath: d + "/" + Identity.curveFile)
    #expect(throws: IdentityError.mismatch(d + "/" + Identity.curveFile, "does not belong to the card's CURVE key")) { _ = try Identity.load(from: d) }
    try "name = \"x\"\nsign_public = 3".write(toFile: d + "/" + Identity.cardFile, atomically: true, encoding: .utf8)
    #expect(throws: IdentityError.self) { _ = try Identity.load(from: d) }
  }
}
