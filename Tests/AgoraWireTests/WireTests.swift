import AgoraCrypto
import Foundation
import Testing
@testable import AgoraWire

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

@Suite struct VectorTests {
  func json(_ name: String) throws -> [String: Any] {
    let d = try Data(contentsOf: URL(fileURLWithPath: repoRoot + "/Protocol/vectors/" + name))
    return try JSONSerialization.jsonObject(with: d) as! [String: Any]
  }

  @Test func everyMessageVectorDecodesAndReencodes() throws {
    let list = try json("messages.json")["messages"] as! [[String: Any]]
    #expect(Set(list.map { $0["type"] as! Int }) == Set(MessageType.allCases.map { Int($0.rawValue) }), "a vector for every message type")
    for v in list {
      let frames = (v["frames"] as! [String]).map { unhex($0)! }
      let m = try Message.decode(frames)
      #expect(Int(m.type.rawValue) == v["type"] as! Int)
      #expect(m.frames() == frames, "\(v["name"]!) does not re-encode to its vector")
    }
  }

  @Test func vectorFilesAreWhatTheCodeWrites() throws {
    let onDisk = try String(contentsOfFile: repoRoot + "/Protocol/vectors/messages.json", encoding: .utf8)
    #expect(onDisk == ProtocolVectors.messagesJSON())
    let env = try String(contentsOfFile: repoRoot + "/Protocol/vectors/envelope.json", encoding: .utf8)
    #expect(env == (try ProtocolVectors.envelopeJSON()))
  }

  /// Every malformed vector is refused with exactly the error (and ERROR code) it lists; the file is what the code writes.
  @Test func malformedVectorsGiveTheirErrors() throws {
    let list = try json("malformed.json")["messages"] as! [[String: Any]]
    #expect(list.count == ProtocolVectors.malformed.count && list.count >= 20)
    for v in list {
      let frames = (v["frames"] as! [String]).map { unhex($0)! }
      #expect { _ = try Message.decode(frames) } throws: { e in
        guard let w = e as? WireError else { return false }
        return w.description == v["error"] as! String && Int(w.code.rawValue) == v["error_code"] as! Int
      }
    }
    #expect(try String(contentsOfFile: repoRoot + "/Protocol/vectors/malformed.json", encoding: .utf8) == ProtocolVectors.malformedJSON())
    #expect(try String(contentsOfFile: repoRoot + "/Protocol/vectors/statement.json", encoding: .utf8) == (try ProtocolVectors.statementJSON()))
  }

  /// The version statement vector: the statement is the documented concatenation and its signature verifies.
  @Test func statementVectorVerifies() throws {
    let v = try json("statement.json")
    let keys = try Sodium.signKeypair(seed: unhex(v["coordinator_sign_seed"] as! String)!)
    #expect(hex(keys.publicKey) == v["coordinator_sign_public"] as! String)
    var w = ByteWriter()
    w.raw(Array("agora-version/1".utf8)); w.string(v["federation"] as! String); w.u64(UInt64(v["number"] as! Int))
    w.raw(unhex(v["hash"] as! String)!); w.raw(unhex(v["parent"] as! String)!)
    #expect(hex(w.bytes) == v["statement"] as! String)
    #expect(Sodium.verify(unhex(v["signature"] as! String)!, message: w.bytes, publicKey: keys.publicKey))
  }

  @Test func envelopeVectorOpensWithTheFixedKeys() throws {
    let v = try json("envelope.json")
    let coord = try Sodium.boxKeypair(seed: unhex(v["coordinator_box_seed"] as! String)!)
    let node = try Sodium.signKeypair(seed: unhex(v["node_sign_seed"] as! String)!)
    #expect(hex(coord.publicKey) == v["coordinator_box_public"] as! String)
    let ctx = Envelope.Context(federation: v["federation"] as! String, round: UInt64(v["round"] as! Int),
                               baseHash: unhex(v["base_hash"] as! String)!, nodeID: unhex(v["node_id"] as! String)!)
    let o = try EnvelopeOpener(headBytes: unhex(v["head"] as! String)!, expected: ctx, aggregationPublicKey: coord.publicKey,
                               aggregationSecretKey: coord.secretKey, sessionNodeID: nil) { $0 == ctx.nodeID ? node.publicKey : nil }
    var payload: [UInt8] = []
    for c in v["chunks"] as! [String] { payload += try o.open(unhex(c)!) }
    try o.finish(unhex(v["final"] as! String)!)
    #expect(payload == (0..<2500).map { UInt8(truncatingIfNeeded: $0) })
  }

  @Test func z85MatchesRFC32() {
    #expect(Z85.encode([0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]) == "HelloWorld")
    #expect(Z85.decode("HelloWorld") == [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B])
    #expect(Z85.decode("Hello") != nil)
    #expect(Z85.decode("Hell") == nil)
    #expect(Z85.decode("Hell~") == nil)
    #expect(Z85.encode([1, 2, 3]) == nil)
  }
}

/// Malformed frames: every kind is a typed `WireError`, never a crash.
@Suite struct MalformedFrameTests {
  let v = Wire.versionFrame
  func body(_ m: Message) -> [UInt8] { m.frames()[1] }

  @Test func frameCountAndVersion() {
    #expect(throws: WireError.frameCount(0)) { try Message.decode([]) }
    #expect(throws: WireError.frameCount(1)) { try Message.decode([v]) }
    #expect(throws: WireError.frameCount(4)) { try Message.decode([v, [0x0A], [1], [2]]) }
    #expect(throws: WireError.notAgora) { try Message.decode([[0x41, 0x47, 0x52], [0x0A]]) }
    #expect(throws: WireError.notAgora) { try Message.decode([Array("HTTP".utf8), [0x0A]]) }
    #expect(throws: WireError.unsupportedVersion(1)) { try Message.decode([[0x41, 0x47, 0x52, 0x01], [0x0A]]) }
    #expect(throws: WireError.unsupportedVersion(3)) { try Message.decode([[0x41, 0x47, 0x52, 0x03], [0x0A]]) }
    #expect(throws: WireError.emptyBody) { try Message.decode([v, []]) }
    #expect(throws: WireError.unknownType(0x7F)) { try Message.decode([v, [0x7F]]) }
  }

  @Test func shortAndLongBodies() {
    // Every message with one byte cut off its body, and with one byte too many.
    for (_, m) in ProtocolVectors.messages where m != .heartbeat {
      var f = m.frames()
      f[1].removeLast()
      #expect(throws: WireError.self) { try Message.decode(f) }
    }
    for (_, m) in ProtocolVectors.messages {
      var f = m.frames()
      f[1].append(0)
      #expect(throws: WireError.decode(.trailing(1))) { try Message.decode(f) }
    }
    #expect(throws: WireError.decode(.tooLarge("body", value: Wire.maxBody + 1, bound: Wire.maxBody))) {
      try Message.decode([v, [0x0A] + [UInt8](repeating: 0, count: Wire.maxBody)])
    }
  }

  @Test func lyingLengths() {
    // A leave whose reason claims 60000 bytes but carries 3.
    #expect(throws: WireError.decode(.tooLarge("reason", value: 60000, bound: Wire.maxString))) {
      try Message.decode([v, [0x0B, 0, 0x60, 0xEA, 0x41, 0x42, 0x43]])
    }
    // A join whose name claims 200 bytes but the body ends first.
    #expect(throws: WireError.decode(.short("name", needed: 200, available: 3))) {
      try Message.decode([v, [0x01, 200, 0, 0x41, 0x42, 0x43]])
    }
    // An upload head blob claiming 4 GiB.
    var w = ByteWriter()
    w.u8(0x06); w.u64(1); w.u64(1); w.u32(1); w.u32(UInt32.max)
    #expect(throws: WireError.decode(.tooLarge("envelope head", value: Int(UInt32.max), bound: Wire.maxBlob))) { try Message.decode([v, w.bytes]) }
    // Invalid UTF-8 in a string.
    #expect(throws: WireError.decode(.invalid("reason is not valid UTF-8"))) { try Message.decode([v, [0x0B, 0, 2, 0, 0xC3, 0x28]]) }
  }

  @Test func payloadFrames() {
    let chunk = Message.uploadChunk(transfer: 1, index: 0, payload: Payload([1])).frames()
    #expect(throws: WireError.payloadFrame(type: .uploadChunk, present: false)) { try Message.decode(Array(chunk.prefix(2))) }
    #expect(throws: WireError.decode(.invalid("zero-size chunk"))) { try Message.decode([chunk[0], chunk[1], []]) }
    #expect(throws: WireError.payloadFrame(type: .heartbeat, present: true)) { try Message.decode([v, [0x0A], [1]]) }
    #expect(throws: WireError.decode(.tooLarge("payload", value: Wire.maxPayload + 1, bound: Wire.maxPayload))) {
      try Message.decode([chunk[0], chunk[1], [UInt8](repeating: 0, count: Wire.maxPayload + 1)])
    }
    // A blob chunk whose index is not below its count.
    var w = ByteWriter()
    w.u8(0x05); w.raw([UInt8](repeating: 0, count: 32)); w.u32(5); w.u32(5)
    #expect(throws: WireError.decode(.invalid("chunk index 5 outside a blob of 5 chunks"))) { try Message.decode([v, w.bytes, [1]]) }
  }

  /// Protocol version 2's new fields round-trip, and what they may hold is checked.
  @Test func termsLeaveKindsErrorSubjectsAndLanguageNames() throws {
    let t = TrainingTerms(tokenizerHash: [UInt8](repeating: 1, count: 32), modelHash: [UInt8](repeating: 2, count: 32), innerSteps: 3, batch: 4,
                          learningRateBits: Float(0.5).bitPattern, rounds: 6)
    for m: Message in [.join(name: "n", software: "s", latestVersion: [UInt8](repeating: 0, count: 32), role: 1, terms: t),
                       .leave(kind: .finished, reason: "done"), .error(code: 12, message: "dup", subject: .transfer(9)),
                       .error(code: 5, message: "no blob", subject: .blob([UInt8](repeating: 3, count: 32))),
                       .error(code: 9, message: "abandon", subject: .round(4)), .error(code: 1, message: "bad", subject: .none)] {
      #expect(try Message.decode(m.frames()) == m)
    }
    var other = t
    other.batch = 64
    other.tokenizerHash[0] = 9
    let diff = other.differences(fromFederation: t)
    #expect(diff.count == 2 && diff.contains("batch: node 64, federation 4") && diff.contains { $0.hasPrefix("tokenizer: node 09") }, "\(diff)")
    #expect(t.differences(fromFederation: t).isEmpty)
    // An unknown LEAVE kind or ERROR subject kind is malformed.
    #expect(throws: WireError.decode(.invalid("unknown LEAVE kind 2 (0 session, 1 finished)"))) { try Message.decode([v, [0x0B, 2, 0, 0]]) }
    #expect(throws: WireError.decode(.invalid("unknown ERROR subject kind 4 (0 none, 1 transfer, 2 blob, 3 round)"))) {
      try Message.decode([v, [0x0C, 1, 0, 0, 0, 4]])
    }
    // Language names: lowercase tags only, in octet order; a name that could forge a log line or HTML is refused.
    func end(_ langs: [String]) -> [[UInt8]] {
      Message.uploadEnd(transfer: 1, final: [1], tokens: 1, steps: 1, lossBits: 0, cpuMillis: 0,
                        languages: langs.map { LanguageTokens(language: $0, tokens: 1) }).frames()
    }
    #expect(throws: Never.self) { try Message.decode(end(["de", "pt-br", "sr_latn"])) }
    for bad in [["de\nround 5"], ["<b>"], ["DE"], ["é"], [""], ["pl", "de"], ["de", "de"], [String(repeating: "a", count: 33)]] {
      #expect(throws: WireError.self, "\(bad)") { try Message.decode(end(bad)) }
    }
    #expect(LanguageTokens.canonical(["Pt-BR": 1, "x y": 2, "a\n": 3]).map(\.language) == ["a_", "pt-br", "x_y"])
  }

  @Test func printableTextCannotForgeLogLines() {
    #expect(Printable.line("a\nb\u{1b}[31mc\u{202e}d") == "a\\u{a}b\\u{1b}[31mc\\u{202e}d")
    #expect(Printable.html("<a href=\"x\" title='y'>&") == "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;")
    #expect(Printable.line(String(repeating: "x", count: 300)).count == 257)
  }

  @Test func randomBytesNeverCrash() {
    var g: UInt64 = 12345
    func next() -> UInt8 { g = g &* 6364136223846793005 &+ 1442695040888963407; return UInt8(truncatingIfNeeded: g >> 33) }
    for _ in 0..<20_000 {
      let n = Int(next() % 40)
      var b = (0..<n).map { _ in next() }
      if !b.isEmpty { b[0] = b[0] % 14 }  // mostly valid types, so the field decoders are exercised
      _ = try? Message.decode([v, b, [1, 2]])
      _ = try? Message.decode([v, b])
    }
  }
}

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
