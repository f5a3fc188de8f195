import AgoraCrypto
@testable import AgoraWire
import Foundation
import Testing

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

  /// Random frames: each either decodes to a message that re-encodes to frames decoding to the same message, or
  /// is refused with a `WireError` (no other error, no crash); both outcomes occur.
  @Test func randomFramesDecodeToARoundTripOrAWireError() {
    var g: UInt64 = 12345
    func next() -> UInt8 { g = g &* 6364136223846793005 &+ 1442695040888963407; return UInt8(truncatingIfNeeded: g >> 33) }
    var decoded = 0, refused = 0
    for _ in 0..<20_000 {
      let n = Int(next() % 40)
      var b = (0..<n).map { _ in next() }
      if !b.isEmpty { b[0] = b[0] % 14 }  // mostly valid types, so the field decoders are exercised
      for frames in [[v, b, [1, 2]], [v, b]] {
        do {
          let m = try Message.decode(frames)
          decoded += 1
          // Compared as octets: a float field may hold a NaN, which is never equal to itself.
          #expect(try Message.decode(m.frames()).frames() == m.frames(), "\(frames) does not round-trip")
        } catch is WireError {
          refused += 1
        } catch {
          Issue.record("\(frames): not a WireError: \(error)")
        }
      }
    }
    #expect(decoded > 0 && refused > 0, "decoded \(decoded), refused \(refused)")
  }
}

@Suite struct Z85Tests {
  @Test func z85MatchesRFC32() {
    #expect(Z85.encode([0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]) == "HelloWorld")
    #expect(Z85.decode("HelloWorld") == [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B])
    #expect(Z85.decode("Hello") != nil)
    #expect(Z85.decode("Hell") == nil)
    #expect(Z85.decode("Hell~") == nil)
    #expect(Z85.encode([1, 2, 3]) == nil)
  }
}
