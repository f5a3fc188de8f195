import AgoraModel
import AgoraTestSupport
import Foundation
import Testing

/// Text of one language from the embedded demo corpus (real manual-page text).
func demoText(_ lang: String, bytes: Int) throws -> String {
  let dir = try demoSlice(languages: [lang], bytes: bytes)
  defer { try? FileManager.default.removeItem(atPath: dir) }
  return try String(contentsOfFile: dir + "/\(lang)/train.txt", encoding: .utf8)
}

/// The vocabulary phase's count tables (SPEC §4.4): merges from tables equal merges from text; thresholds keep
/// rare pre-tokens on the node; malformed tables are typed errors.
@Suite struct VocabularyTests {
  /// Two nodes' tables of the same language, added, teach the same merges as both texts given to one trainer —
  /// byte for byte in tokenizer.json, through the encoded tables; and languages of different nodes likewise.
  @Test func mergesFromTablesEqualMergesFromText() throws {
    let de = try demoText("de", bytes: 80_000), fr = try demoText("fr", bytes: 60_000), pl = try demoText("pl", bytes: 40_000)
    let half = de.index(de.startIndex, offsetBy: de.count / 2)
    let (de1, de2) = (String(de[..<half]), String(de[half...]))
    // From text: one trainer holding everything.
    var direct = BPETrainer()
    direct.addLanguage("de", texts: [de1, de2])
    direct.addLanguage("fr", texts: [fr])
    direct.addLanguage("pl", texts: [pl])
    // From tables: node A holds de1 and fr, node B de2 and pl; each table goes through its wire form.
    let a = [PreTokenCounts.count(language: "de", texts: [de1]), PreTokenCounts.count(language: "fr", texts: [fr])]
    let b = [PreTokenCounts.count(language: "de", texts: [de2]), PreTokenCounts.count(language: "pl", texts: [pl])]
    var merged: [String: PreTokenCounts] = [:]
    for t in a + b {
      let wire = try PreTokenCounts(decoding: t.encoded())
      #expect(wire.entries.mapValues(\.count) == t.entries.mapValues(\.count) && wire.bytes == t.bytes && wire.characters == t.characters)
      if merged[t.language] == nil { merged[t.language] = wire } else { try merged[t.language]!.merge(wire) }
    }
    var fromTables = BPETrainer()
    for l in ["de", "fr", "pl"] { fromTables.add(merged[l]!) }
    for balance in [BPETrainer.Balance.bytes, .temperature(3, characters: true), .equalize(rounds: 2, strength: 1)] {
      let x = try direct.train(vocabSize: 600, balance: balance), y = try fromTables.train(vocabSize: 600, balance: balance)
      #expect(x.jsonData() == y.jsonData(), "\(balance)")
      #expect(x.merges.count == 600 - 257)
    }
  }

  /// A pre-token seen fewer than k times, or in fewer than m documents, is not in the table that leaves the node
  /// (not even its octets), and so not in the vocabulary; the counts of the rest are exact.
  @Test func rarePreTokensStayOnTheNode() throws {
    let common = try demoText("it", bytes: 30_000)
    // "Zyqwort" three times in one document; "Vexholm" once in each of three documents.
    let text = common + "\n\nZyqwort Zyqwort Zyqwort\n\nVexholm a\n\nVexholm b\n\nVexholm c\n"
    let all = PreTokenCounts.count(language: "it", texts: [text])
    #expect(all.entries[Array(" Zyqwort".utf8)]?.count == 2 && all.entries[Array("Zyqwort".utf8)]?.count == 1)
    #expect(all.entries[Array("Vexholm".utf8)] == PreTokenCounts.Entry(count: 3, documents: 3))
    #expect(all.entries[Array(" Zyqwort".utf8)]?.documents == 1)
    func contains(_ bytes: [UInt8], _ word: String) -> Bool {
      let w = Array(word.utf8)
      return bytes.count >= w.count && (0...(bytes.count - w.count)).contains { Array(bytes[$0..<($0 + w.count)]) == w }
    }
    // k = 3: Vexholm (3) stays, Zyqwort (2 + 1) goes.
    let (k3, f3) = all.thresholded(minCount: 3, minDocuments: 1)
    #expect(!contains(k3.encoded(), "Zyqwort") && contains(k3.encoded(), "Vexholm"))
    #expect(f3.kept + f3.dropped == all.entries.count && f3.dropped > 0)
    // m = 2: Zyqwort (one document) goes, Vexholm (three) stays.
    let (m2, _) = all.thresholded(minCount: 1, minDocuments: 2)
    #expect(!contains(m2.encoded(), "Zyqwort") && contains(m2.encoded(), "Vexholm"))
    // What is kept is counted exactly; the text's size is still the whole text's.
    for (w, e) in m2.entries { #expect(e.count == all.entries[w]!.count) }
    #expect(m2.bytes == all.bytes && m2.characters == all.characters)
    // Thresholds off: nothing dropped.
    let (off, foff) = all.thresholded(minCount: 1, minDocuments: 1)
    #expect(off.entries.count == all.entries.count && foff.dropped == 0)
    // With noise, counts move but stay non-negative whole numbers; rare entries mostly go at k = 3.
    var g = UInt64(1)
    let (noisy, _) = all.thresholded(minCount: 3, minDocuments: 1, noise: 2) { g = g &* 6364136223846793005 &+ 1442695040888963407; return g }
    #expect(noisy.entries.values.allSatisfy { $0.count >= 3 } && noisy.entries.count < all.entries.count)
    // A vocabulary learned with k = 3 has no token for the rare word.
    var t = BPETrainer()
    t.add(k3)
    let tok = try t.train(vocabSize: 1000)
    #expect(!tok.tokenBytes.contains(Array(" Zyqwort".utf8)) && !tok.tokenBytes.contains(Array("Zyqwort".utf8)))
  }

  /// A held-back pre-token goes out only as pieces of n characters that are themselves frequent (k times, in m
  /// documents): a stem shared by rare words does, the rest of those words and a word repeated in one document
  /// do not. Thresholds off, nothing is held back and nothing is cut.
  @Test func heldBackWordsGoOutOnlyAsFrequentPieces() throws {
    #expect(PreTokenCounts.cut(ArraySlice(" καλημέρα".utf8), length: 3).map { String(decoding: $0, as: UTF8.self) } == [" καλ", "ημέ", "ρα"])
    #expect(PreTokenCounts.cut(ArraySlice("abcdef".utf8), length: 3).map { String(decoding: $0, as: UTF8.self) } == ["abc", "def"])
    let common = try demoText("it", bytes: 30_000)
    // Five rare words with the stem "Zyq", one per document; "Vxqholmu" four times in one document.
    let rare = ["Zyqxjw", "Zyqkvw", "Zyqwxk", "Zyqjqx", "Zyqvkj"].map { "\n\nuna \($0) due" }.joined()
    let text = common + rare + "\n\nVxqholmu Vxqholmu Vxqholmu Vxqholmu\n"
    let all = PreTokenCounts.count(language: "it", texts: [text])
    let (plain, f) = all.thresholded(minCount: 5, minDocuments: 2)
    let (kept, f2, pieces) = all.thresholded(texts: [text], fragmentLength: 3, minCount: 5, minDocuments: 2)
    #expect(f == f2 && pieces.kept > 0 && pieces.dropped > 0)
    #expect(kept.entries[Array(" Zyq".utf8)]?.count == 5 && plain.entries[Array(" Zyq".utf8)] == nil)
    for w in kept.entries.keys {
      let s = String(decoding: w, as: UTF8.self)
      #expect(!["xjw", "kvw", "wxk", "jqx", "vkj", "Vxq"].contains { s.contains($0) }, "\(s)")
    }
    // Every entry of the plain table is there, at least as often; the sizes are the text's.
    for (w, e) in plain.entries { #expect((kept.entries[w]?.count ?? 0) >= e.count) }
    #expect(kept.bytes == all.bytes && kept.characters == all.characters)
    // Length 0: the plain table. Thresholds off: nothing to cut.
    #expect(all.thresholded(texts: [text], fragmentLength: 0, minCount: 5, minDocuments: 2).0 == plain)
    let (off, _, none) = all.thresholded(texts: [text], fragmentLength: 3, minCount: 1, minDocuments: 1)
    #expect(off.entries.mapValues(\.count) == all.entries.mapValues(\.count) && none.kept == 0 && none.dropped == 0)
  }

  /// `equalize` measures a language by the characters of its counted pre-tokens: a table whose rare words a
  /// node dropped looks as well served as the whole text (it does not look better served and get less pull).
  @Test func equalizeMeasuresWhatWasCounted() throws {
    let text = try demoText("de", bytes: 40_000)
    let all = PreTokenCounts.count(language: "de", texts: [text])
    var (kept, _) = all.thresholded(minCount: 5, minDocuments: 2)
    #expect(kept.entries.count < all.entries.count / 2 && kept.characters == all.characters)
    kept.language = "de-kept"
    var t = BPETrainer()
    t.add(all)
    t.add(kept)
    // 257 tokens: no merge, so a token per octet, and tokens per character are octets per character of what
    // each table counted (German: a little above 1). Dividing by the whole text's characters would give the
    // thresholded table far fewer.
    let bytesOnly = try t.train(vocabSize: 257)
    let tpc = t.tokensPerCharacter(bytesOnly)
    #expect(tpc[0] > 1 && tpc[0] < 1.05 && abs(tpc[1] - tpc[0]) < 0.02, "\(tpc)")
  }

  /// Documents are blocks between blank lines, or lines when a text has no blank line.
  @Test func documentsAreBlocksOrLines() {
    #expect(PreTokenCounts.count(language: "x", texts: ["a b\nc\n\nd\n\n\ne\n"]).documents == 3)
    #expect(PreTokenCounts.count(language: "x", texts: ["a b\nc\nd"]).documents == 3)
    let t = PreTokenCounts.count(language: "x", texts: ["word here\nword there\n"])
    #expect(t.entries[Array("word".utf8)] == PreTokenCounts.Entry(count: 2, documents: 2))
  }

  /// Every malformed table is a VocabularyError, never a crash or a silently different table.
  @Test func malformedTablesAreTypedErrors() throws {
    let good = PreTokenCounts.count(language: "de", texts: ["ein kleiner Text, ein Text.\n"]).encoded()
    #expect(try PreTokenCounts(decoding: good).language == "de")
    var cases: [(String, [UInt8])] = [
      ("empty", []), ("bad magic", [0x42] + good.dropFirst()), ("truncated", Array(good.dropLast())),
      ("trailing octet", good + [0]), ("version", Array(good[0..<4]) + [9] + Array(good[5...])),
    ]
    // Entries out of order: swap the first two entries of a two-entry table.
    let two = PreTokenCounts(language: "x", bytes: 2, characters: 2, documents: 1,
                             entries: [[0x61]: .init(count: 1, documents: 1), [0x62]: .init(count: 1, documents: 1)]).encoded()
    // Head: AGVC, version, 1 + "x", four one-octet varints; then "1 a 1" and "1 b 1".
    let head = 4 + 1 + 2 + 4
    #expect(Array(two[head...]) == [1, 0x61, 1, 1, 0x62, 1])
    cases.append(("order", Array(two[..<head]) + [1, 0x62, 1, 1, 0x61, 1]))
    cases.append(("repeated", Array(two[..<head]) + [1, 0x61, 1, 1, 0x61, 1]))
    cases.append(("zero count", Array(two[..<head]) + [1, 0x61, 0, 1, 0x62, 1]))
    cases.append(("empty pre-token", Array(two[..<head]) + [0, 1, 1, 0x62, 1]))
    cases.append(("overlong varint", Array(two[..<(head - 1)]) + [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]))
    for (name, bytes) in cases {
      #expect(throws: VocabularyError.self, "\(name)") { try PreTokenCounts(decoding: bytes) }
    }
    var t = PreTokenCounts(language: "de")
    #expect(throws: VocabularyError.self) { try t.merge(PreTokenCounts(language: "fr")) }
  }

  @Test func balanceSettingsParse() throws {
    #expect(try BPETrainer.Balance(parsing: "bytes") == .bytes)
    #expect(try BPETrainer.Balance(parsing: "equalize") == .equalize(rounds: 6, strength: 1))
    #expect(try BPETrainer.Balance(parsing: "equalize:5:2") == .equalize(rounds: 5, strength: 2))
    #expect(try BPETrainer.Balance(parsing: "temperature-characters:3") == .temperature(3, characters: true))
    for bad in ["", "equalize:2", "temperature:-1", "temperature:nan", "equalize:1.5:1", "bits"] {
      #expect(throws: ModelError.self, "\(bad)") { try BPETrainer.Balance(parsing: bad) }
    }
  }
}
