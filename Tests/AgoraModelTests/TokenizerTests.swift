import Foundation
import Testing
@testable import AgoraModel

/// Multilingual sample text written for these tests (not from any corpus).
let sampleText: [String: String] = [
  "de": "Die Größe der Datei wird in Bytes angegeben; über die Option --block-size lässt sie sich ändern.\n",
  "fr": "L'option « -a » n'ignore pas les entrées commençant par « . » — c'est très pratique.\n",
  "el": "Η εντολή εμφανίζει πληροφορίες για τα αρχεία του τρέχοντος καταλόγου.\n",
  "pl": "Wyświetla informacje o plikach; domyślnie bieżący katalog. Zażółć gęślą jaźń!\n",
  "cs": "Příkaz vypíše obsah adresáře, řazený abecedně, pokud není zadáno jinak.\n",
  "en": "It's what they'd've said: we'll see   you\t\tthere  \n\n  in 2026, won't we? 3.14159 ½ ²\n",
  "mixed": "emoji 👩‍💻 and 中文字符 and Ünïcödé\u{00A0}nbsp\u{2003}emspace  trailing   \n",
]

@Suite struct TokenizerTests {
  func pieces(_ s: String) -> [String] {
    var out: [String] = []
    var t = s
    t.withUTF8 { b in PreTokenizer().split(b) { s, e in out.append(String(decoding: UnsafeBufferPointer(rebasing: b[s..<e]), as: UTF8.self)) } }
    return out
  }

  @Test func preTokenizerFollowsGPT2Regex() {
    #expect(pieces("Hello world") == ["Hello", " world"])
    #expect(pieces("it's we'll they'd") == ["it", "'s", " we", "'ll", " they", "'d"])
    #expect(pieces("a  b") == ["a", " ", " b"])
    #expect(pieces("a \n b") == ["a", " \n", " b"])
    #expect(pieces("x\ny") == ["x", "\n", "y"])
    #expect(pieces("end   ") == ["end", "   "])
    #expect(pieces("v1.2 3x") == ["v", "1", ".", "2", " 3", "x"])
    #expect(pieces("«hi»") == ["«", "hi", "»"])
    #expect(pieces("Größe") == ["Größe"])
  }

  func trainSmall(vocab: Int = 400) throws -> Tokenizer {
    var t = BPETrainer()
    for (lang, text) in sampleText { t.addLanguage(lang, texts: [String(repeating: text, count: 3)]) }
    return try t.train(vocabSize: vocab)
  }

  @Test func roundTripsEveryLanguage() throws {
    let tok = try trainSmall()
    #expect(tok.vocabSize == 400)
    for (lang, text) in sampleText {
      let ids = tok.encode(text)
      #expect(tok.decode(ids) == text, "\(lang) does not round-trip")
      #expect(ids.count < text.utf8.count, "\(lang): merges should compress")
    }
  }

  @Test func trainingIsDeterministic() throws {
    let a = try trainSmall(), b = try trainSmall()
    #expect(a.merges.map { [$0.0, $0.1] } == b.merges.map { [$0.0, $0.1] })
  }

  @Test func balancesLanguages() throws {
    // One language with 50× more text must not take the whole vocabulary.
    var t = BPETrainer()
    t.addLanguage("big", texts: [String(repeating: "the quick brown fox jumps over the lazy dog ", count: 500)])
    t.addLanguage("small", texts: [String(repeating: "žluťoučký kůň úpěl ďábelské ódy ", count: 10)])
    let tok = try t.train(vocabSize: 320)
    let small = tok.encode("žluťoučký kůň úpěl ďábelské ódy").count
    #expect(small < 12, "the small language got \(small) tokens for 6 words")
  }

  @Test func jsonRoundTripAndSpecialToken() throws {
    let tok = try trainSmall()
    let path = NSTemporaryDirectory() + "agora-tok-\(UUID().uuidString).json"
    defer { try? FileManager.default.removeItem(atPath: path) }
    try tok.save(to: path)
    let back = try Tokenizer(contentsOf: path)
    #expect(back.vocabSize == tok.vocabSize)
    for text in sampleText.values { #expect(back.encode(text) == tok.encode(text)) }
    let ids = back.encodeWithSpecial("a<|endoftext|>b")
    #expect(ids == [97, back.eotID, 98])
  }

  @Test func corruptTokenizerFilesGiveTypedErrors() throws {
    let tok = try trainSmall()
    let dir = NSTemporaryDirectory() + "agora-tokbad-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let good = tok.jsonData()
    let cases: [(String, Data, String)] = [
      ("truncated.json", good.prefix(good.count / 2), "not a JSON object"),
      ("empty.json", Data(), "not a JSON object"),
      ("wordpiece.json", Data(#"{"model":{"type":"WordPiece"}}"#.utf8), "BPE"),
      ("badmerge.json", Data(String(decoding: good, as: UTF8.self).replacingOccurrences(of: #""merges":["#, with: #""merges":["zz qq","#).utf8), "merge 0"),
    ]
    for (name, data, expected) in cases {
      let p = dir + "/" + name
      FileManager.default.createFile(atPath: p, contents: data)
      do {
        _ = try Tokenizer(contentsOf: p)
        Issue.record("\(name) loaded")
      } catch let ModelError.file(path, problem) {
        #expect(path == p)
        #expect(problem.contains(expected), "\(name): \(problem)")
      }
    }
    #expect(throws: ModelError.self) { try Tokenizer(contentsOf: dir + "/missing.json") }
  }
}
