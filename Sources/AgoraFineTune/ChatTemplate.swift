import AgoraModel
import AgoraTensor
import Foundation

/// One turn of a conversation, as Hugging Face datasets and TRL hold it (`{"role": …, "content": …}`).
public struct ChatMessage: Codable, Equatable, Sendable {
  public enum Role: String, Codable, Sendable, CaseIterable {
    case system, user, assistant
  }

  public var role: Role
  public var content: String

  public init(_ role: Role, _ content: String) {
    self.role = role
    self.content = content
  }
}

/// A named chat template: how a conversation becomes tokens, the special tokens it needs, and the same rule as
/// the Jinja `chat_template` that transformers' `apply_chat_template` runs (an exported model carries it in
/// `tokenizer_config.json`). Agora renders by pieces: message text is always text, never special tokens, even if
/// it spells one; the text between two special tokens is tokenized as one string, as transformers does after it
/// splits the rendered string at its added tokens.
public enum ChatTemplate: String, Codable, CaseIterable, Sendable {
  /// `<|im_start|>role\ncontent<|im_end|>\n` per message.
  case chatml
  /// Llama 3's: `<|begin_of_text|>`, then `<|start_header_id|>role<|end_header_id|>\n\n` + the content with
  /// surrounding whitespace trimmed + `<|eot_id|>` per message.
  case llama3

  /// The special tokens the template writes (added to a vocabulary that lacks them).
  public var specialTokens: [String] {
    switch self {
    case .chatml: return ["<|im_start|>", "<|im_end|>"]
    case .llama3: return ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    }
  }

  /// The token that ends a turn: generation in chat stops at it, and an answer's loss includes it.
  public var endOfTurn: String { self == .chatml ? "<|im_end|>" : "<|eot_id|>" }

  /// The template as Jinja, for `tokenizer_config.json`'s `chat_template`.
  public var jinja: String {
    switch self {
    case .chatml:
      return "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        + "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    case .llama3:
      return "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        + " + (message['content'] | trim) + '<|eot_id|>' }}{% endfor %}"
        + "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    }
  }

  /// The chat template of a `tokenizer_config.json`: nil without the file or without `chat_template`; a
  /// template Agora does not render (any Jinja but `ChatTemplate`'s own) is an error naming the file.
  public static func read(configAt path: String) throws -> ChatTemplate? {
    guard let d = FileManager.default.contents(atPath: path) else { return nil }
    guard let o = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] else {
      throw ModelError.file(path: path, problem: "not a JSON object (corrupt or truncated?)")
    }
    guard let jinja = o["chat_template"] else { return nil }
    guard let text = jinja as? String, let t = Self(jinja: text) else {
      throw ModelError.file(path: path, problem: "its chat_template is not one Agora renders (\(Self.allCases.map(\.rawValue).joined(separator: ", ")))")
    }
    return t
  }

  /// The template whose Jinja is exactly `jinja`, or nil.
  public init?(jinja: String) {
    guard let t = Self.allCases.first(where: { $0.jinja == jinja }) else { return nil }
    self = t
  }

  /// A piece of a rendered conversation: a special token, or text (trained: part of an answer).
  enum Piece: Equatable {
    case special(String, trained: Bool)
    case text(String, trained: Bool)
  }

  func pieces(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> [Piece] {
    var out: [Piece] = []
    switch self {
    case .chatml:
      for m in messages {
        let answer = m.role == .assistant
        out += [.special("<|im_start|>", trained: false), .text(m.role.rawValue + "\n", trained: false), .text(m.content, trained: answer),
                .special("<|im_end|>", trained: answer), .text("\n", trained: false)]
      }
      if addGenerationPrompt { out += [.special("<|im_start|>", trained: false), .text("assistant\n", trained: false)] }
    case .llama3:
      out.append(.special("<|begin_of_text|>", trained: false))
      for m in messages {
        let answer = m.role == .assistant
        out += [.special("<|start_header_id|>", trained: false), .text(m.role.rawValue, trained: false), .special("<|end_header_id|>", trained: false),
                .text("\n\n", trained: false), .text(pythonStrip(m.content), trained: answer), .special("<|eot_id|>", trained: answer)]
      }
      if addGenerationPrompt {
        out += [.special("<|start_header_id|>", trained: false), .text("assistant", trained: false), .special("<|end_header_id|>", trained: false),
                .text("\n\n", trained: false)]
      }
    }
    return out
  }
}

/// A conversation as token ids, and which of them are an answer's (the loss is on those only).
public struct RenderedChat: Equatable, Sendable {
  public var ids: [Int32]
  public var trained: [Bool]

  /// Next-token targets for `ids`: position t predicts ids[t+1] when that token is an answer's, else nothing
  /// (`GPT.ignoredTarget`); the last position predicts nothing.
  public var targets: [Int32] {
    (0..<ids.count).map { t in t + 1 < ids.count && trained[t + 1] ? ids[t + 1] : GPT.ignoredTarget }
  }
}

public enum ChatError: Error, Equatable, CustomStringConvertible {
  /// The vocabulary lacks a special token the template needs (`Tokenizer.adding(specialTokens:)`).
  case missingSpecialToken(String, template: ChatTemplate)

  public var description: String {
    switch self {
    case .missingSpecialToken(let t, let tpl):
      return "the vocabulary has no \(t), which the \(tpl.rawValue) chat template needs (add the template's special tokens first)"
    }
  }
}

extension Tokenizer {
  /// This vocabulary with `specialTokens` that it lacks appended as added tokens (new ids after the last): the
  /// chat template's tokens for a model that has none. The model's embedding grows with it
  /// (`ParameterLayout.growVocabulary`).
  public func adding(specialTokens: [String]) throws -> Tokenizer {
    var bytes = tokenBytes, added = addedTokens
    for t in specialTokens where !added.values.contains(t) {
      added[Int32(bytes.count)] = t
      bytes.append([])
    }
    if bytes.count == tokenBytes.count { return self }
    return try Tokenizer(tokenBytes: bytes, merges: merges, addedTokens: added, eotID: eotID, prefixIDs: prefixIDs, ignoresMerges: ignoresMerges)
  }

  /// `messages` as `template` renders them (with the assistant header after them when `addGenerationPrompt`),
  /// with the answer tokens marked. A token is an answer's if any of its bytes is.
  public func render(_ messages: [ChatMessage], template: ChatTemplate, addGenerationPrompt: Bool = false) throws -> RenderedChat {
    var out = RenderedChat(ids: [], trained: [])
    var text: [UInt8] = [], trainedBytes: [Bool] = []
    func flush() {
      guard !text.isEmpty else { return }
      let ids = encode(String(decoding: text, as: UTF8.self))
      var at = 0
      for id in ids {
        let n = tokenBytes[Int(id)].count
        out.ids.append(id)
        out.trained.append(trainedBytes[at..<(at + n)].contains(true))
        at += n
      }
      text.removeAll(keepingCapacity: true)
      trainedBytes.removeAll(keepingCapacity: true)
    }
    for piece in template.pieces(messages, addGenerationPrompt: addGenerationPrompt) {
      switch piece {
      case .text(let s, let trained):
        text += Array(s.utf8)
        trainedBytes += Array(repeating: trained, count: s.utf8.count)
      case .special(let s, let trained):
        flush()
        guard let id = addedTokenID(s) else { throw ChatError.missingSpecialToken(s, template: template) }
        out.ids.append(id)
        out.trained.append(trained)
      }
    }
    flush()
    return out
  }
}

/// Python's `str.strip()` (Jinja's `trim`): removes leading and trailing characters Python counts as whitespace.
public func pythonStrip(_ s: String) -> String {
  let scalars = Array(s.unicodeScalars)
  var a = 0, b = scalars.count
  while a < b, isPythonSpace(scalars[a]) { a += 1 }
  while b > a, isPythonSpace(scalars[b - 1]) { b -= 1 }
  var out = String.UnicodeScalarView()
  out.append(contentsOf: scalars[a..<b])
  return String(out)
}

/// `str.isspace()` for one character: the bidirectional classes WS, B and S, or the category Zs.
func isPythonSpace(_ c: Unicode.Scalar) -> Bool {
  switch c.value {
  case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: return true
  default: return false
  }
}
