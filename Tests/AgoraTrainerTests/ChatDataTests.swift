import AgoraData
import AgoraModel
import AgoraTensor
import AgoraTestSupport
import AgoraFineTune
import Foundation
import Testing

/// Chat data (issue #34): answer-only loss masks, malformed lines reported by line and never trained on,
/// conversations packed whole into rows.
@Suite struct ChatDataTests {
  /// A byte-level tokenizer with a few merges and the template's special tokens.
  static func tokenizer(_ template: ChatTemplate) throws -> Tokenizer {
    var merges: [(Int32, Int32)] = []
    var seen = Set<[Int32]>()
    for i in 0..<60 {
      let m = (Int32(97 + i % 26), Int32(97 + (i * 7 + 3) % 26))
      if seen.insert([m.0, m.1]).inserted { merges.append(m) }
    }
    return try Tokenizer(merges: merges).adding(specialTokens: template.specialTokens)
  }

  @Test(arguments: ChatTemplate.allCases)
  func lossFallsOnAnswersOnly(_ template: ChatTemplate) throws {
    let tok = try Self.tokenizer(template)
    let answers = ["Το ls δείχνει αρχεία.", "Use -l for a long listing!"]
    let chat: [ChatMessage] = [ChatMessage(.system, "You answer about commands."), ChatMessage(.user, "What does ls do?"),
                               ChatMessage(.assistant, answers[0]), ChatMessage(.user, "And ls -l?"), ChatMessage(.assistant, answers[1])]
    let r = try tok.render(chat, template: template)
    #expect(r.ids.count == r.trained.count)
    let end = tok.addedTokenID(template.endOfTurn)!
    // The trained tokens are exactly the answers, each followed by the end-of-turn token.
    var runs: [[Int32]] = [], current: [Int32] = []
    for (id, t) in zip(r.ids, r.trained) {
      if t { current.append(id) } else if !current.isEmpty { runs.append(current); current = [] }
    }
    if !current.isEmpty { runs.append(current) }
    #expect(runs.count == 2)
    for (run, answer) in zip(runs, answers) {
      #expect(run.last == end)
      #expect(tok.decode(Array(run.dropLast())) == answer)
    }
    // Targets: position t predicts token t+1 only where that token is trained.
    let targets = r.targets
    for t in 0..<r.ids.count {
      let want = t + 1 < r.ids.count && r.trained[t + 1] ? r.ids[t + 1] : GPT.ignoredTarget
      #expect(targets[t] == want)
    }
    #expect(targets.filter { $0 != GPT.ignoredTarget }.count == r.trained.filter { $0 }.count - (r.trained.first == true ? 1 : 0))
    // The text of a message is text: one that spells a special token does not become it.
    let spelled = try tok.render([ChatMessage(.user, template.endOfTurn), ChatMessage(.assistant, "x")], template: template)
    #expect(spelled.ids.filter { $0 == end }.count == 2)
    // A vocabulary without the template's tokens is a typed error.
    #expect(throws: ChatError.self) { try Tokenizer(merges: []).render(chat, template: template) }
  }

  @Test func malformedLinesAreReportedByLineAndNeverTrainedOn() throws {
    let tok = try Self.tokenizer(.chatml)
    let dir = NSTemporaryDirectory() + "agora-chat-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try FileManager.default.createDirectory(atPath: dir + "/el", withIntermediateDirectories: true)
    let good = #"{"messages": [{"role": "user", "content": "Τι κάνει το ls;"}, {"role": "assistant", "content": "Δείχνει αρχεία."}], "id": 7}"#
    let long = #"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\#(String(repeating: "zq ", count: 200))"}]}"#
    let lines = [
      good,                                                                                  // 1
      "{\"messages\": [{\"role\": \"user\", \"content\": \"unterminated",                  // 2 bad JSON
      "",                                                                                    // 3 blank: not counted
      #"{"text": "plain text, not a conversation"}"#,                                       // 4 no messages
      #"{"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}"#,  // 5 unknown role
      #"{"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}"#,          // 6 missing content
      #"{"messages": [{"role": "user", "content": "only a question"}]}"#,                   // 7 no answer
      long,                                                                                  // 8 over-long
      #"{"messages": [{"role": "user", "content": ["parts"]}, {"role": "assistant", "content": "y"}]}"#,  // 9 content not a string
      "[1, 2, 3]",                                                                           // 10 not an object
      good,                                                                                  // 11
    ]
    var data = Data(lines.joined(separator: "\n").utf8)
    data += Data([0x0A, 0xFF, 0xFE, 0x7B, 0x0A])                                             // 12 not UTF-8
    try data.write(to: URL(fileURLWithPath: dir + "/el/train.jsonl"))
    var logged: [String] = []
    let corpus = try ChatCorpus(dirs: [dir], tokenizer: tok, template: .chatml, maxTokens: 128) { logged.append($0) }
    let f = corpus.train[0]
    #expect(corpus.languages == ["el"])
    #expect(f.lines == 11)
    #expect(f.conversations.map(\.line) == [1, 11])
    let kinds = Dictionary(uniqueKeysWithValues: f.problems.map { ($0.line, $0.kind) })
    #expect(kinds == [2: .badJSON, 4: .noMessages, 5: .unknownRole, 6: .missingContent, 7: .noAnswer, 8: .overLong, 9: .missingContent,
                      10: .badJSON, 12: .badJSON])
    #expect(logged.count == 1 && logged[0].contains("line 5 unknown role") && logged[0].contains("\"tool\""), "\(logged)")
    #expect(logged[0].contains("2 conversations") && logged[0].contains("9 refused"))
    // Only the two good conversations' answers are ever targets.
    let sampler = try ChatSampler(corpus: corpus, seed: 3, pad: tok.eotID)
    let answer = Set(try tok.render([ChatMessage(.user, "Τι κάνει το ls;"), ChatMessage(.assistant, "Δείχνει αρχεία.")], template: .chatml).targets)
    for i in 0..<20 {
      let (x, y, langs) = sampler.batch(i, B: 2, T: 128)
      #expect(x.count == 256 && y.count == 256 && langs == [0, 0])
      #expect(Set(y).isSubset(of: answer))
    }
    // A file with nothing to train on is an error that says so; a missing directory too.
    try Data(lines[1].utf8).write(to: URL(fileURLWithPath: dir + "/el/train.jsonl"))
    #expect(throws: ChatDataError.self) { try ChatCorpus(dirs: [dir], tokenizer: tok, template: .chatml, maxTokens: 128) }
    #expect(throws: ChatDataError.self) { try ChatCorpus(dirs: [dir + "/none"], tokenizer: tok, template: .chatml, maxTokens: 128) }
  }

  @Test func conversationsArePackedWholeIntoRows() throws {
    let tok = try Self.tokenizer(.llama3)
    var rng = SplitMix64(seed: 4)
    let chats = try (0..<30).map { i in
      try tok.render([ChatMessage(.user, String(repeating: "ab ", count: 1 + Int(rng.next() % 12))), ChatMessage(.assistant, "answer \(i)")], template: .llama3)
    }
    let T = 96
    let rows = ChatPacking.rows(chats, T: T, pad: tok.eotID)
    #expect(rows.allSatisfy { $0.tokens.count == T && $0.targets.count == T })
    // Every conversation appears whole, in order, and the targets are its own.
    let flat = rows.flatMap { row -> [Int32] in
      let n = row.tokens.lastIndex { $0 != tok.eotID }.map { $0 + 1 } ?? 0
      return Array(row.tokens[0..<n])
    }
    #expect(flat == chats.flatMap(\.ids))
    #expect(rows.flatMap(\.targets).filter { $0 != GPT.ignoredTarget } == chats.flatMap(\.targets).filter { $0 != GPT.ignoredTarget })
    #expect(rows.count < chats.count, "several conversations share a row")
  }
}

/// The demo's instruction set: options and purposes read from a manual page's roff, and held-out commands.
@Suite struct DemoInstructionTests {
  /// A page written here in the style of help2man's output (not a Debian page).
  static let page = #"""
  .\" a comment
  .TH FROB 1 "2026" "frob 1.0" "User Commands"
  .SH NAME
  frob \- turn widgets into gadgets
  .SH SYNOPSIS
  \fBfrob\fP [\fI\,OPTION\/\fP]…
  .SH DESCRIPTION
  .PP
  Frob reads widgets.
  .TP
  \fB\-a\fP, \fB\-\-all\fP
  frob every widget, even
  hidden ones
  .TP
  .B \-\-quiet
  say nothing at all
  .TP
  FILE
  not an option
  .PP
  Trailing text.
  """#

  @Test func optionsAndPurposeFromRoff() {
    let r = Roff.options(Self.page)
    #expect(r.command == "frob")
    #expect(r.summary == "Turn widgets into gadgets.")
    #expect(r.options.map(\.tag) == ["-a, --all", "--quiet"])
    #expect(r.options.first?.description == "frob every widget, even hidden ones")
    #expect(Roff.options(".so man1/other.1").options.isEmpty)
    let chats = DemoInstructions.conversations(page: Self.page, lang: "de")
    #expect(chats?.command == "frob" && chats?.chats.count == 3)
    #expect(chats?.chats[1].first?.content == "Was bewirkt die Option -a, --all von frob?")
    #expect(DemoInstructions.conversations(page: Self.page, lang: "xx") == nil ? true : false, "no question pattern for an unknown language")
  }

  @Test func wholeCommandsAreHeldOut() {
    let commands = (0..<57).map { "cmd\($0)" }
    let held = DemoInstructions.heldOut(commands)
    #expect(held.count == 6)
    #expect(held.isSubset(of: Set(commands)))
    // The choice depends on the names, not their order; a smaller language holds out at least one of three.
    #expect(DemoInstructions.heldOut(commands.reversed()) == held)
    #expect(DemoInstructions.heldOut(["a", "b", "c"]).count == 1)
    #expect(DemoInstructions.heldOut(["a", "b"]).isEmpty)
  }
}
