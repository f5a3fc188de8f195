import AgoraImport
@testable import AgoraModel
import AgoraTensor
import AgoraTestSupport
import AgoraFineTune
import Foundation
import Testing

/// Chat templates (issue #34): Agora renders the same token ids as transformers' `apply_chat_template` runs
/// the Jinja `chat_template` Agora exports, on 100 varied conversations per template and vocabulary.
/// Needs the Python environment (scripts/setup --python).
@Suite(.serialized) struct ChatTemplateParityTests {
  static let phrases = [
    "Hello, how are you?", "Καλημέρα κόσμε, τι κάνεις;", "Привет, мир! Как дела?", "こんにちは世界", "مرحبا بالعالم",
    "Zażółć gęślą jaźń", "emoji 🙂🚀 and more", "  leading and trailing spaces  ", "\n\nnewlines around\n", "",
    "tabs\tand\u{00A0}no-break spaces", "code: `ls -la | grep x` && echo $HOME", "Ελληνικά και English mixed", "42 + 7 = 49.",
    "Straße über Brücke", "ქართული ენა", "עברית", "हिन्दी भाषा", " a", "\t", "line one\nline two\n\nline four",
  ]

  /// A seeded conversation: sometimes a system prompt, one to four turns, contents of 0–3 phrases.
  static func conversation(_ rng: inout SplitMix64) -> [ChatMessage] {
    func content() -> String {
      let n = Int(rng.next() % 4)
      let seps = [" ", "\n", "", "  "]
      return (0..<n).map { _ in phrases[Int(rng.next() % UInt64(phrases.count))] }.joined(separator: seps[Int(rng.next() % 4)])
    }
    var m: [ChatMessage] = []
    if rng.next() % 3 == 0 { m.append(ChatMessage(.system, content())) }
    for t in 0..<(1 + Int(rng.next() % 4)) {
      m.append(ChatMessage(.user, content()))
      if t > 0 || rng.next() % 5 != 0 { m.append(ChatMessage(.assistant, content())) }
    }
    return m
  }

  static func jsonl(_ convs: [[ChatMessage]]) throws -> Data {
    struct Line: Encodable { var messages: [ChatMessage] }
    let enc = JSONEncoder()
    var d = Data()
    for c in convs {
      d += try enc.encode(Line(messages: c))
      d += Data("\n".utf8)
    }
    return d
  }

  static let cases: [(String, ChatTemplate)] = [("gpt2", .chatml), ("gpt2", .llama3), ("llama", .chatml), ("llama", .llama3)]

  @Test(arguments: cases.indices)
  func applyChatTemplateGivesTheSameIDs(_ which: Int) throws {
    let (kind, template) = Self.cases[which]
    let (hf, cleanup) = try ImportParityTests.checkpoint(kind)
    defer { cleanup() }
    let root = (hf as NSString).deletingLastPathComponent
    let imported = try HuggingFaceImport.run(hf, out: root + "/agora")
    let tok = try imported.tokenizer.adding(specialTokens: template.specialTokens)
    #expect(tok.vocabSize == imported.tokenizer.vocabSize + template.specialTokens.count)
    let dir = root + "/chat"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try tok.save(to: dir + "/tokenizer.json")
    try tok.configJSON(bos: imported.bosTokenID, chatTemplate: template.jinja).write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
    #expect(try ChatTemplate.read(configAt: dir + "/tokenizer_config.json") == template)

    var rng = SplitMix64(seed: UInt64(100 + which))
    let convs = (0..<100).map { _ in Self.conversation(&rng) }
    #expect(convs.filter { $0.count > 2 }.count > 30, "multi-turn conversations")
    #expect(convs.contains { $0.first?.role == .system })
    #expect(convs.contains { $0.contains { $0.content.isEmpty } })
    try Self.jsonl(convs).write(to: URL(fileURLWithPath: root + "/convs.jsonl"))
    for generationPrompt in [false, true] {
      let out = root + "/hf-\(generationPrompt).json"
      let args = ["render", dir, root + "/convs.jsonl", out] + (generationPrompt ? ["--generation-prompt"] : [])
      let (status, log) = try runProcess(ImportParityTests.python, [repoRoot + "/scripts/hf_chat.py"] + args)
      #expect(status == 0, "\(log)")
      let want = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as! [[Int]]
      #expect(want.count == 100)
      var differing: [Int] = []
      for (i, c) in convs.enumerated() {
        let got = try tok.render(c, template: template, addGenerationPrompt: generationPrompt).ids.map(Int.init)
        if got != want[i] { differing.append(i) }
      }
      #expect(differing.isEmpty, "\(template) on \(kind)'s vocabulary, generation prompt \(generationPrompt): conversations \(differing.prefix(5)) differ, e.g. \(differing.first.map { String(describing: convs[$0]) } ?? "")")
    }
  }
}
