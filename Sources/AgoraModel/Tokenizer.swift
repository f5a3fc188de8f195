import AgoraStorage
import AgoraText
import Foundation

/// A byte-level BPE tokenizer in the form of GPT-2 and Hugging Face `tokenizers`.
///
/// Ids 0–255 are the single bytes; each merge adds one id; the special `<|endoftext|>` token comes last.
/// `encode` gives the same ids as `tokenizers` loading the `tokenizer.json` this type writes. An instance
/// caches words and is not thread-safe: use one per thread.
public final class Tokenizer {
  public static let endOfText = "<|endoftext|>"

  /// Merges in rank order: (left id, right id); merge `r` creates id `256 + r`.
  public let merges: [(Int32, Int32)]
  /// The bytes each id stands for (empty for the special token).
  public let tokenBytes: [[UInt8]]
  public let eotID: Int32
  public var vocabSize: Int { tokenBytes.count }

  /// (left << 32 | right) → (rank, new id)
  let mergeTable: [UInt64: (Int32, Int32)]
  let pre = PreTokenizer()
  /// Cache of pre-token bytes → ids; the most common words are looked up, not merged again.
  private var cache: [ArraySlice<UInt8>: [Int32]] = [:]
  private let cacheLimit = 200_000

  public init(merges: [(Int32, Int32)]) throws {
    var bytes: [[UInt8]] = (0..<256).map { [UInt8($0)] }
    var table: [UInt64: (Int32, Int32)] = [:]
    for (r, (a, b)) in merges.enumerated() {
      guard a >= 0, b >= 0, Int(a) < bytes.count, Int(b) < bytes.count else {
        throw ModelError.mismatch("merge \(r) refers to an id that does not exist yet (\(a), \(b))")
      }
      let key = UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))
      guard table[key] == nil else { throw ModelError.mismatch("merge \(r) (\(a), \(b)) is repeated") }
      table[key] = (Int32(r), Int32(256 + r))
      bytes.append(bytes[Int(a)] + bytes[Int(b)])
    }
    self.merges = merges
    eotID = Int32(bytes.count)
    bytes.append([])
    tokenBytes = bytes
    mergeTable = table
  }

  // MARK: - Encoding

  /// Encodes text into ids (no special tokens are recognised inside `text`).
  public func encode(_ text: String) -> [Int32] {
    var out: [Int32] = []
    out.reserveCapacity(text.utf8.count / 3)
    encode(text, into: &out)
    return out
  }

  /// Encodes and appends to `out`.
  public func encode(_ text: String, into out: inout [Int32]) {
    var t = text
    t.withUTF8 { buf in
      pre.split(buf) { s, e in
        encodeWord(UnsafeBufferPointer(rebasing: buf[s..<e]), into: &out)
      }
    }
  }

  /// The ids of one pre-token (its octets), as inside `encode`.
  public func encodePreToken(_ octets: [UInt8]) -> [Int32] {
    var out: [Int32] = []
    octets.withUnsafeBufferPointer { encodeWord($0, into: &out) }
    return out
  }

  /// Encodes text where the literal `<|endoftext|>` stands for the special token (as `tokenizers` does).
  public func encodeWithSpecial(_ text: String) -> [Int32] {
    var out: [Int32] = []
    let parts = text.components(separatedBy: Self.endOfText)
    for (i, p) in parts.enumerated() {
      if i > 0 { out.append(eotID) }
      encode(p, into: &out)
    }
    return out
  }

  @inline(__always)
  func encodeWord(_ w: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
    if w.count == 1 { out.append(Int32(w[0])); return }
    let key = ArraySlice(w)
    if let hit = cache[key] { out.append(contentsOf: hit); return }
    var sym = w.map { Int32($0) }
    while sym.count > 1 {
      var bestRank = Int32.max, bestNew: Int32 = 0, bestKey: UInt64 = 0
      for i in 0..<(sym.count - 1) {
        let k = UInt64(UInt32(sym[i])) << 32 | UInt64(UInt32(sym[i + 1]))
        if let (r, nid) = mergeTable[k], r < bestRank { bestRank = r; bestNew = nid; bestKey = k }
      }
      if bestRank == Int32.max { break }
      let a = Int32(truncatingIfNeeded: bestKey >> 32), b = Int32(truncatingIfNeeded: bestKey & 0xFFFF_FFFF)
      var merged: [Int32] = []
      merged.reserveCapacity(sym.count)
      var i = 0
      while i < sym.count {
        if i + 1 < sym.count, sym[i] == a, sym[i + 1] == b { merged.append(bestNew); i += 2 } else { merged.append(sym[i]); i += 1 }
      }
      sym = merged
    }
    if cache.count < cacheLimit { cache[key] = sym }
    out.append(contentsOf: sym)
  }

  // MARK: - Decoding

  /// The bytes of `ids` (the special token decodes to its literal text).
  public func decodeBytes(_ ids: [Int32]) -> [UInt8] {
    var out: [UInt8] = []
    for id in ids {
      if id == eotID { out.append(contentsOf: Array(Self.endOfText.utf8)) } else if id >= 0, Int(id) < tokenBytes.count { out.append(contentsOf: tokenBytes[Int(id)]) }
    }
    return out
  }

  public func decode(_ ids: [Int32]) -> String { String(decoding: decodeBytes(ids), as: UTF8.self) }

  /// Number of UTF-8 bytes each id stands for (0 for the special token), for bits-per-byte.
  public lazy var byteLengths: [Int32] = tokenBytes.map { Int32($0.count) }
}

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
  /// The `tokenizer.json` document (Hugging Face `tokenizers` format, byte-level BPE like GPT-2).
  public func jsonData() -> Data {
    var vocab = "{"
    vocab += tokenBytes.indices.dropLast().map { "\(jsonString(ByteLevel.string(tokenBytes[$0]))):\($0)" }.joined(separator: ",")
    vocab += ",\(jsonString(Self.endOfText)):\(eotID)}"
    let mergeList = merges.map { jsonString(ByteLevel.string(tokenBytes[Int($0.0)]) + " " + ByteLevel.string(tokenBytes[Int($0.1)])) }
      .joined(separator: ",")
    let byteLevel = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}"
    let s = """
    {"version":"1.0","truncation":null,"padding":null,\
    "added_tokens":[{"id":\(eotID),"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":true,"special":true}],\
    "normalizer":null,"pre_tokenizer":\(byteLevel),"post_processor":\(byteLevel),"decoder":\(byteLevel),\
    "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,\
    "fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":\(vocab),"merges":[\(mergeList)]}}
    """
    return Data(s.utf8)
  }

  public func save(to path: String) throws { try AtomicFile.write(jsonData(), to: path) }

  /// Loads a byte-level BPE `tokenizer.json` written by Agora (or any GPT-2 style one whose first 256 ids
  /// are the single bytes in order and whose merges create ids in order).
  public convenience init(contentsOf path: String) throws {
    guard let data = FileManager.default.contents(atPath: path) else { throw ModelError.file(path: path, problem: "cannot read the file") }
    try self.init(json: data, source: path)
  }

  /// Loads tokenizer.json from its bytes (`source` names them in errors).
  public convenience init(json data: Data, source path: String = "tokenizer.json") throws {
    func fail(_ s: String) -> ModelError { .file(path: path, problem: s) }
    guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw fail("not a JSON object (corrupt or truncated?)") }
    guard let model = root["model"] as? [String: Any], model["type"] as? String == "BPE" else { throw fail("model.type is not \"BPE\"") }
    guard let vocab = model["vocab"] as? [String: Any], let mergesAny = model["merges"] as? [Any] else { throw fail("model.vocab or model.merges is missing") }
    var idOf: [String: Int32] = [:]
    for (k, v) in vocab {
      guard let n = (v as? NSNumber)?.intValue, n >= 0, n < 1 << 24 else { throw fail("vocab entry \(jsonString(k)) has a bad id") }
      idOf[k] = Int32(n)
    }
    for b in 0..<256 where idOf[ByteLevel.string([UInt8(b)])] != Int32(b) {
      throw fail("id \(b) is not the byte \(b): not an Agora byte-level vocabulary")
    }
    var merges: [(Int32, Int32)] = []
    for (r, m) in mergesAny.enumerated() {
      let parts: [String]
      if let s = m as? String { parts = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init) } else if let a = m as? [String] { parts = a } else { throw fail("merge \(r) is neither \"a b\" nor [a, b]") }
      guard parts.count == 2, let a = idOf[parts[0]], let b = idOf[parts[1]], let c = idOf[parts[0] + parts[1]] else {
        throw fail("merge \(r) \(parts) names tokens that are not in the vocabulary")
      }
      guard c == Int32(256 + r) else { throw fail("merge \(r) creates id \(c), expected \(256 + r)") }
      merges.append((a, b))
    }
    guard idOf[Self.endOfText] == Int32(256 + merges.count), vocab.count == 257 + merges.count else {
      throw fail("vocabulary has \(vocab.count) entries; expected 256 bytes + \(merges.count) merges + <|endoftext|> last")
    }
    do { try self.init(merges: merges) } catch { throw fail("\(error)") }
  }
}
