import AgoraModel
import AgoraTensor
import AgoraText
import AgoraWire
import Foundation

/// Conversations for instruction tuning, one JSON object per line in the format Hugging Face datasets and TRL
/// use: `{"messages": [{"role": "system" | "user" | "assistant", "content": "…"}, …]}` (other keys are
/// ignored). Each is rendered with a chat template; the loss falls on the answers only.
///
/// A line that cannot be trained on as written is counted with its line number and kind, never trained on in
/// part and never fatal: bad JSON (or not UTF-8), no `messages` list, an unknown role, a missing or non-string
/// content, no answer (no assistant turn), or longer than the model's context once rendered.
public struct ChatFile: Sendable {
  public enum ProblemKind: String, Sendable, CaseIterable, Codable {
    case badJSON = "bad JSON"
    case noMessages = "no messages"
    case unknownRole = "unknown role"
    case missingContent = "missing content"
    case noAnswer = "no answer"
    case overLong = "over-long"
  }

  public struct Problem: Error, Sendable, Equatable, Codable {
    public var line: Int
    public var kind: ProblemKind
    public var detail: String
  }

  public let path: String
  /// Lines that are not blank.
  public let lines: Int
  /// Rendered conversations with the line each came from.
  public let conversations: [(line: Int, chat: RenderedChat)]
  public let problems: [Problem]

  /// Parses one line; nil and a problem when it cannot be trained on.
  static func parse(_ line: Substring) -> Result<[ChatMessage], Problem> {
    func fail(_ k: ProblemKind, _ d: String) -> Result<[ChatMessage], Problem> { .failure(Problem(line: 0, kind: k, detail: d)) }
    guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) else { return fail(.badJSON, "not a JSON value") }
    guard let o = obj as? [String: Any] else { return fail(.badJSON, "not a JSON object") }
    guard let list = o["messages"] as? [Any] else { return fail(.noMessages, "no \"messages\" list") }
    guard !list.isEmpty else { return fail(.noMessages, "\"messages\" is empty") }
    var out: [ChatMessage] = []
    for (i, item) in list.enumerated() {
      guard let m = item as? [String: Any] else { return fail(.badJSON, "message \(i + 1) is not an object") }
      guard let r = m["role"] as? String else { return fail(.unknownRole, "message \(i + 1) has no role") }
      guard let role = ChatMessage.Role(rawValue: r) else {
        return fail(.unknownRole, "message \(i + 1) has role \(jsonQuoted(r)) (system, user or assistant)")
      }
      guard let c = m["content"], !(c is NSNull) else { return fail(.missingContent, "message \(i + 1) has no content") }
      guard let content = c as? String else { return fail(.missingContent, "message \(i + 1)'s content is not a string") }
      out.append(ChatMessage(role, content))
    }
    guard out.contains(where: { $0.role == .assistant }) else { return fail(.noAnswer, "no assistant message: nothing to learn from") }
    return .success(out)
  }

  /// Reads and renders `path`. `maxTokens`: the longest rendered conversation kept (the model's context).
  public init(path: String, tokenizer: Tokenizer, template: ChatTemplate, maxTokens: Int) throws {
    guard let data = FileManager.default.contents(atPath: path) else { throw ChatDataError.unreadable("\(path): cannot read the file") }
    self.path = path
    var convs: [(line: Int, chat: RenderedChat)] = [], problems: [Problem] = [], count = 0
    var lineNumber = 0
    for raw in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
      lineNumber += 1
      var bytes = raw
      if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
      guard bytes.contains(where: { $0 != 0x20 && $0 != 0x09 }) else { continue }
      count += 1
      guard let text = String(data: Data(bytes), encoding: .utf8) else {
        problems.append(Problem(line: lineNumber, kind: .badJSON, detail: "not UTF-8"))
        continue
      }
      switch Self.parse(Substring(text)) {
      case .failure(var p):
        p.line = lineNumber
        problems.append(p)
      case .success(let messages):
        let chat = try tokenizer.render(messages, template: template)
        if chat.ids.count > maxTokens {
          problems.append(Problem(line: lineNumber, kind: .overLong, detail: "\(chat.ids.count) tokens, more than the \(maxTokens) a sequence holds"))
        } else {
          convs.append((lineNumber, chat))
        }
      }
    }
    lines = count
    conversations = convs
    self.problems = problems
  }

  /// One line per file for logs: what was kept and every problem by line.
  public var report: String {
    var s = "\(path): \(lines) lines, \(conversations.count) conversations"
    if problems.isEmpty { return s + ", no problems" }
    var byKind: [String] = []
    for k in ProblemKind.allCases {
      let n = problems.filter { $0.kind == k }.count
      if n > 0 { byKind.append("\(n) \(k.rawValue)") }
    }
    s += "; \(problems.count) refused (\(byKind.joined(separator: ", "))): "
    s += problems.prefix(20).map { "line \($0.line) \($0.kind.rawValue) (\($0.detail))" }.joined(separator: "; ")
    if problems.count > 20 { s += "; … \(problems.count - 20) more" }
    return s
  }
}

private func jsonQuoted(_ s: String) -> String { "\"" + s.prefix(40) + (s.count > 40 ? "…" : "") + "\"" }

/// The chat data of a trainer: per language, `train.jsonl` and optionally `valid.jsonl`, rendered with one
/// template. A directory that itself holds `train.jsonl` is one language named after it; otherwise each of its
/// subdirectories with one is.
public final class ChatCorpus: @unchecked Sendable {
  public let languages: [String]
  public let template: ChatTemplate
  public let train: [ChatFile]
  public let valid: [ChatFile?]

  public init(languages: [String], template: ChatTemplate, train: [ChatFile], valid: [ChatFile?]) {
    (self.languages, self.template, self.train, self.valid) = (languages, template, train, valid)
  }

  /// Whether `dir` (or one of its subdirectories) holds chat data rather than text.
  public static func holdsChat(_ dir: String) -> Bool {
    let fm = FileManager.default
    if fm.fileExists(atPath: dir + "/train.jsonl") { return true }
    let subs = (try? fm.contentsOfDirectory(atPath: dir)) ?? []
    return subs.contains { fm.fileExists(atPath: dir + "/" + $0 + "/train.jsonl") }
  }

  /// The chat data of `dirs` (each a language directory holding train.jsonl and optionally valid.jsonl, or a
  /// directory of them). `validationOnly`: held-out data for scoring (the coordinator's), found by valid.jsonl;
  /// `train` is then empty and nothing may be sampled from it.
  public convenience init(dirs: [String], tokenizer: Tokenizer, template: ChatTemplate, maxTokens: Int, validationOnly: Bool = false,
                          log: (String) -> Void = { _ in }) throws {
    let fm = FileManager.default
    let marker = validationOnly ? "valid.jsonl" : "train.jsonl"
    var found: [(String, String)] = []
    for dir in dirs {
      var isDir: ObjCBool = false
      guard fm.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else { throw ChatDataError.unreadable("\(dir) is not a directory") }
      if fm.fileExists(atPath: dir + "/" + marker) { found.append(((dir as NSString).lastPathComponent, dir)); continue }
      let subs = ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).sorted().filter { fm.fileExists(atPath: dir + "/" + $0 + "/" + marker) }
      guard !subs.isEmpty else { throw ChatDataError.noData("\(dir) has no \(marker) and no language subdirectories with one") }
      found += subs.map { ($0, dir + "/" + $0) }
    }
    for (name, d) in found where !LanguageTokens.isValidName(name) { throw ChatDataError.badLanguageName(directory: d) }
    guard Set(found.map(\.0)).count == found.count else { throw ChatDataError.unreadable("language names repeat: \(found.map(\.0))") }
    var train: [ChatFile] = [], valid: [ChatFile?] = []
    for (_, d) in found {
      if !validationOnly {
        let t = try ChatFile(path: d + "/train.jsonl", tokenizer: tokenizer, template: template, maxTokens: maxTokens)
        log(t.report)
        guard !t.conversations.isEmpty else { throw ChatDataError.noData("\(t.path) has no conversation to train on (\(t.problems.count) refused)") }
        train.append(t)
      }
      if fm.fileExists(atPath: d + "/valid.jsonl") {
        let v = try ChatFile(path: d + "/valid.jsonl", tokenizer: tokenizer, template: template, maxTokens: maxTokens)
        log(v.report)
        valid.append(v)
      } else {
        valid.append(nil)
      }
    }
    self.init(languages: found.map(\.0), template: template, train: train, valid: valid)
  }

  /// Answer tokens (trained targets) per language in the training files.
  public var answerTokens: [Int] { train.map { $0.conversations.reduce(0) { $0 + $1.chat.trained.filter { $0 }.count } } }
}

/// Rows of packed conversations: each row of T positions holds whole conversations back to back (a
/// conversation never spans two rows), then end-of-text padding with no targets.
public enum ChatPacking {
  /// Packs `chats` in order, first fit into the current row; returns (tokens, targets) of `rows` rows.
  public static func rows(_ chats: [RenderedChat], T: Int, pad: Int32) -> [(tokens: [Int32], targets: [Int32])] {
    var out: [(tokens: [Int32], targets: [Int32])] = []
    var tokens: [Int32] = [], targets: [Int32] = []
    func close() {
      guard !tokens.isEmpty else { return }
      let n = T - tokens.count
      out.append((tokens + [Int32](repeating: pad, count: n), targets + [Int32](repeating: GPT.ignoredTarget, count: n)))
      tokens = []
      targets = []
    }
    for c in chats {
      precondition(c.ids.count <= T, "ChatPacking: a conversation longer than a row")
      if tokens.count + c.ids.count > T { close() }
      tokens += c.ids
      targets += c.targets
    }
    close()
    return out
  }
}

/// Draws training batches of chat data: each row picks a language by the mixture weights, then conversations
/// at random until the next does not fit. Batch `i` depends only on the seed and `i`.
public struct ChatSampler: Sendable {
  public let corpus: ChatCorpus
  public let weights: [Double]
  public let seed: UInt64
  public let pad: Int32

  public init(corpus: ChatCorpus, weights: [Double]? = nil, seed: UInt64, pad: Int32) throws {
    let w = weights ?? [Double](repeating: 1, count: corpus.languages.count)
    guard w.count == corpus.languages.count, w.allSatisfy({ $0 >= 0 && $0.isFinite }), w.reduce(0, +) > 0 else {
      throw ChatDataError.noData("mixture weights \(w) do not fit languages \(corpus.languages)")
    }
    (self.corpus, self.weights, self.seed, self.pad) = (corpus, w.map { $0 / w.reduce(0, +) }, seed, pad)
  }

  /// Batch `index`: (tokens, targets) of the rows `rows` (default all B), each row T, and each row's language.
  public func batch(_ index: Int, B: Int, T: Int, rows: Range<Int>? = nil) -> (tokens: [Int32], targets: [Int32], languages: [Int]) {
    let rows = rows ?? 0..<B
    var rng = SplitMix64.derived(seed ^ 0xC4A7, UInt64(index))
    var tokens: [Int32] = [], targets: [Int32] = [], langs: [Int] = []
    for b in 0..<rows.upperBound {
      let lang = SplitMix64.pick(weights, at: rng.nextUnit())
      let convs = corpus.train[lang].conversations
      var picked: [RenderedChat] = [], used = 0
      while true {
        let c = convs[Int(rng.next() % UInt64(convs.count))].chat
        if used + c.ids.count > T { break }
        picked.append(c)
        used += c.ids.count
      }
      guard rows.contains(b) else { continue }
      let row = ChatPacking.rows(picked, T: T, pad: pad)[0]
      tokens += row.tokens
      targets += row.targets
      langs.append(lang)
    }
    return (tokens, targets, langs)
  }
}

public enum ChatDataError: Error, Equatable, CustomStringConvertible {
  case unreadable(String)
  case noData(String)
  case badLanguageName(directory: String)

  public var description: String {
    switch self {
    case .unreadable(let s), .noData(let s): return s
    case .badLanguageName(let d): return "\(Printable.line(d)): a language directory's name must be 1 to 32 of a-z, 0-9, '-' and '_' (a lowercase language tag such as pt-br): rename it"
    }
  }
}
