import AgoraStorage
import AgoraText
import Foundation

// MARK: - Hugging Face tokenizer.json

/// GPT-2's reversible byte → printable-character map used in byte-level BPE vocabularies.
public enum ByteLevel {
  public static let byteToChar: [Character] = {
    var bs: [Int] = Array(33...126) + Array(161...172) + Array(174...255)
    var cs = bs
    var n = 0
    for b in 0..<256 where !bs.contains(b) {
      bs.append(b)
      cs.append(256 + n)
      n += 1
    }
    var table = [Character](repeating: " ", count: 256)
    for (b, c) in zip(bs, cs) { table[b] = Character(Unicode.Scalar(UInt32(c))!) }
    return table
  }()

  public static let charToByte: [Character: UInt8] = {
    var m: [Character: UInt8] = [:]
    for (b, c) in byteToChar.enumerated() { m[c] = UInt8(b) }
    return m
  }()

  public static func string(_ bytes: [UInt8]) -> String { String(bytes.map { byteToChar[Int($0)] }) }

  public static func bytes(_ s: String) -> [UInt8]? {
    var out: [UInt8] = []
    for ch in s {
      guard let b = charToByte[ch] else { return nil }
      out.append(b)
    }
    return out
  }
}

extension Tokenizer {
  /// The literal text of token `id` in `tokenizer.json`: an added token's content, or its bytes in GPT-2's
  /// printable byte map.
  func jsonToken(_ id: Int) -> String { addedTokens[Int32(id)] ?? ByteLevel.string(tokenBytes[id]) }

  /// The `tokenizer.json` document (Hugging Face `tokenizers` format, byte-level BPE like GPT-2). For Agora's
  /// own vocabularies its bytes depend only on the merges (a federation's tokenizer hash is taken over them).
  public func jsonData() -> Data {
    var vocab = "{"
    vocab += tokenBytes.indices.map { "\(jsonString(jsonToken($0))):\($0)" }.joined(separator: ",")
    vocab += "}"
    let mergeList = merges.map { jsonString(jsonToken(Int($0.0)) + " " + jsonToken(Int($0.1))) }.joined(separator: ",")
    let added = addedTokens.keys.sorted().map {
      "{\"id\":\($0),\"content\":\(jsonString(addedTokens[$0]!)),\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":true,\"special\":true}"
    }.joined(separator: ",")
    let byteLevel = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}"
    var post = byteLevel
    if !prefixIDs.isEmpty {
      let names = prefixIDs.map { jsonString(jsonToken(Int($0))) }
      let prefix = names.map { "{\"SpecialToken\":{\"id\":\($0),\"type_id\":0}}," }.joined()
      let table = Set(prefixIDs).sorted().map { "\(jsonString(jsonToken(Int($0)))):{\"id\":\(jsonString(jsonToken(Int($0)))),\"ids\":[\($0)],\"tokens\":[\(jsonString(jsonToken(Int($0))))]}" }
      post = "{\"type\":\"TemplateProcessing\",\"single\":[\(prefix){\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
        + "\"pair\":[\(prefix){\"Sequence\":{\"id\":\"A\",\"type_id\":0}},\(prefix){\"Sequence\":{\"id\":\"B\",\"type_id\":1}}],"
        + "\"special_tokens\":{\(table.joined(separator: ","))}}"
    }
    let s = """
    {"version":"1.0","truncation":null,"padding":null,\
    "added_tokens":[\(added)],\
    "normalizer":null,"pre_tokenizer":\(byteLevel),"post_processor":\(post),"decoder":\(byteLevel),\
    "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,\
    "fuse_unk":false,"byte_fallback":false,"ignore_merges":\(ignoresMerges),"vocab":\(vocab),"merges":[\(mergeList)]}}
    """
    return Data(s.utf8)
  }

  public func save(to path: String) throws { try AtomicFile.write(jsonData(), to: path) }

  /// `tokenizer_config.json` naming the end-of-text (and, given, the beginning) token, for transformers'
  /// `AutoTokenizer` and for `init(contentsOf:)`.
  /// With `chatTemplate` (Jinja), it as `chat_template` (what `apply_chat_template` runs).
  public func configJSON(bos: Int? = nil, chatTemplate: String? = nil) -> Data {
    var parts = ["\"tokenizer_class\": \"PreTrainedTokenizerFast\"", "\"eos_token\": \(jsonString(jsonToken(Int(eotID))))"]
    if let bos, bos >= 0, bos < vocabSize, addedTokens[Int32(bos)] != nil { parts.append("\"bos_token\": \(jsonString(jsonToken(bos)))") }
    if let chatTemplate { parts.append("\"chat_template\": \(jsonString(chatTemplate))") }
    parts.append("\"model_max_length\": 1000000000000000019884624838656")
    return Data(("{\n  " + parts.joined(separator: ",\n  ") + "\n}\n").utf8)
  }

  /// Loads a byte-level BPE `tokenizer.json`. The end-of-text token is `tokenizer_config.json`'s `eos_token`
  /// when that file lies beside it, else `<|endoftext|>`.
  public convenience init(contentsOf path: String) throws {
    guard let data = FileManager.default.contents(atPath: path) else { throw ModelError.file(path: path, problem: "cannot read the file") }
    let side = ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent("tokenizer_config.json")
    try self.init(json: data, source: path, endOfText: try Self.eosToken(configAt: side))
  }

  /// `eos_token` of a `tokenizer_config.json` (a string or `{"content": …}`); nil without the file or the key.
  public static func eosToken(configAt path: String) throws -> String? {
    guard let d = FileManager.default.contents(atPath: path) else { return nil }
    guard let o = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] else {
      throw ModelError.file(path: path, problem: "not a JSON object (corrupt or truncated?)")
    }
    if let s = o["eos_token"] as? String { return s }
    if let t = o["eos_token"] as? [String: Any], let s = t["content"] as? String { return s }
    return nil
  }

  /// Loads tokenizer.json from its bytes (`source` names them in errors). Every part Agora does not implement
  /// exactly as `tokenizers` does is refused by name, so ids never silently differ from the original's.
  /// `endOfTextID` (e.g. a config.json's `eos_token_id`) names the end-of-text token by id instead.
  public convenience init(json data: Data, source path: String = "tokenizer.json", endOfText: String? = nil, endOfTextID: Int? = nil) throws {
    func fail(_ s: String) -> ModelError { .file(path: path, problem: s) }
    guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw fail("not a JSON object (corrupt or truncated?)") }
    guard let model = root["model"] as? [String: Any], model["type"] as? String ?? "BPE" == "BPE" else { throw fail("model.type is not \"BPE\"") }
    guard let vocab = model["vocab"] as? [String: Any], let mergesAny = model["merges"] as? [Any] else { throw fail("model.vocab or model.merges is missing") }
    if model["byte_fallback"] as? Bool == true { throw fail("model.byte_fallback is not supported (SentencePiece-style vocabularies): Agora's are byte-level") }
    for k in ["continuing_subword_prefix", "end_of_word_suffix"] {
      if let v = model[k] as? String, !v.isEmpty { throw fail("model.\(k) \(jsonString(v)) is not supported") }
    }
    if let n = root["normalizer"], !(n is NSNull) { throw fail("normalizer \(Self.typeName(n)) is not supported (only none)") }
    try Self.checkPreTokenizer(root["pre_tokenizer"], fail: fail)
    if let d = root["decoder"], !(d is NSNull), (d as? [String: Any])?["type"] as? String != "ByteLevel" { throw fail("decoder \(Self.typeName(d)) is not supported (ByteLevel)") }

    var tokens: [Int: [UInt8]] = [:], added: [Int32: String] = [:]
    for (k, v) in vocab {
      guard let n = (v as? NSNumber)?.intValue, n >= 0, n < 1 << 24 else { throw fail("vocab entry \(jsonString(k)) has a bad id") }
      guard tokens[n] == nil else { throw fail("id \(n) appears twice in model.vocab") }
      tokens[n] = ByteLevel.bytes(k) ?? []
    }
    var addedID: [String: Int32] = [:]
    for a in root["added_tokens"] as? [[String: Any]] ?? [] {
      guard let id = (a["id"] as? NSNumber)?.intValue, id >= 0, id < 1 << 24, let content = a["content"] as? String, !content.isEmpty else {
        throw fail("an entry of added_tokens has no id or content")
      }
      added[Int32(id)] = content
      addedID[content] = Int32(id)
      tokens[id] = []
    }
    for (k, v) in vocab where ByteLevel.bytes(k) == nil && addedID[k] != (v as? NSNumber).map({ Int32($0.intValue) }) {
      throw fail("vocab entry \(jsonString(k)) is neither byte-level text nor an added token")
    }
    let n = (tokens.keys.max() ?? -1) + 1
    guard tokens.count == n else { throw fail("ids are not 0..<\(n) without gaps (\(n - tokens.count) missing)") }
    let bytes = (0..<n).map { tokens[$0]! }
    var idOf: [String: Int32] = [:]
    for (k, v) in vocab { idOf[k] = Int32((v as! NSNumber).intValue) }
    var merges: [(Int32, Int32)] = []
    merges.reserveCapacity(mergesAny.count)
    for (r, m) in mergesAny.enumerated() {
      let parts: [String]
      if let s = m as? String { parts = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init) } else if let a = m as? [String] { parts = a } else { throw fail("merge \(r) is neither \"a b\" nor [a, b]") }
      guard parts.count == 2, let a = idOf[parts[0]], let b = idOf[parts[1]], idOf[parts[0] + parts[1]] != nil else {
        throw fail("merge \(r) \(parts) names tokens that are not in the vocabulary")
      }
      merges.append((a, b))
    }
    let eosName = endOfText ?? endOfTextID.flatMap { added[Int32($0)] } ?? Self.endOfText
    guard let eot = addedID[eosName] else {
      throw fail("no end-of-text token: \(jsonString(eosName)) is not among added_tokens (name it as eos_token in tokenizer_config.json)")
    }
    let prefix = try Self.templatePrefix(root["post_processor"], addedID: addedID, fail: fail)
    do {
      try self.init(tokenBytes: bytes, merges: merges, addedTokens: added, eotID: eot, prefixIDs: prefix,
                    ignoresMerges: model["ignore_merges"] as? Bool ?? false)
    } catch { throw fail("\(error)") }
  }

  static func typeName(_ o: Any?) -> String { ((o as? [String: Any])?["type"] as? String).map { "\"\($0)\"" } ?? "(untyped)" }

  /// Agora pre-tokenizes as GPT-2's ByteLevel does (`use_regex`, no prefix space); anything else is refused.
  static func checkPreTokenizer(_ p: Any?, fail: (String) -> ModelError) throws {
    guard let o = p as? [String: Any] else { throw fail("pre_tokenizer is missing: expected ByteLevel") }
    if o["type"] as? String == "Sequence", let list = o["pretokenizers"] as? [Any], list.count == 1 { return try checkPreTokenizer(list[0], fail: fail) }
    guard o["type"] as? String == "ByteLevel" else {
      throw fail("pre_tokenizer \(typeName(o)) is not supported: Agora splits text as GPT-2's ByteLevel (use_regex: true)")
    }
    if o["add_prefix_space"] as? Bool == true { throw fail("pre_tokenizer.add_prefix_space = true is not supported") }
    if o["use_regex"] as? Bool == false { throw fail("pre_tokenizer.use_regex = false is not supported") }
  }

  /// The added tokens a post-processor puts before every text (TemplateProcessing's `single` up to `$A`);
  /// a template that adds anything after the text is refused.
  static func templatePrefix(_ p: Any?, addedID: [String: Int32], fail: (String) -> ModelError) throws -> [Int32] {
    guard let o = p as? [String: Any] else { return [] }
    switch o["type"] as? String {
    case "ByteLevel": return []
    case "Sequence":
      var out: [Int32] = []
      for q in o["processors"] as? [Any] ?? [] { out += try templatePrefix(q, addedID: addedID, fail: fail) }
      return out
    case "TemplateProcessing":
      guard let single = o["single"] as? [[String: Any]] else { throw fail("post_processor.single is missing") }
      let table = o["special_tokens"] as? [String: Any] ?? [:]
      var out: [Int32] = [], seenText = false
      for piece in single {
        if piece["Sequence"] != nil { seenText = true; continue }
        guard let st = piece["SpecialToken"] as? [String: Any], let name = st["id"] as? String else { throw fail("post_processor.single has an unknown piece") }
        guard !seenText else { throw fail("post_processor adds \(jsonString(name)) after the text: not supported") }
        if let entry = table[name] as? [String: Any], let ids = entry["ids"] as? [NSNumber] { out += ids.map { Int32($0.intValue) } } else if let id = addedID[name] { out.append(id) } else {
          throw fail("post_processor names \(jsonString(name)), which is not an added token")
        }
      }
      return out
    default: throw fail("post_processor \(typeName(o)) is not supported")
    }
  }
}
