import AgoraStorage
import AgoraText
import Foundation

/// A byte-level BPE tokenizer in the form of GPT-2 and Hugging Face `tokenizers`.
///
/// Agora's own vocabularies (`init(merges:)`): ids 0–255 are the single bytes, each merge adds one id and the
/// special `<|endoftext|>` token comes last. A vocabulary read from another project's `tokenizer.json`
/// (GPT-2's, or one made with `tokenizers`) keeps its own ids: bytes, merged tokens and added (special) tokens
/// wherever that file puts them. `encode` gives the same ids as `tokenizers` loading the same `tokenizer.json`.
/// An instance caches words and is not thread-safe: use one per thread (`copy()`).
public final class Tokenizer {
  public static let endOfText = "<|endoftext|>"

  /// Merges in rank order: (left id, right id).
  public let merges: [(Int32, Int32)]
  /// The bytes each id stands for (empty for added tokens).
  public let tokenBytes: [[UInt8]]
  /// The token that ends a document (and a generation).
  public let eotID: Int32
  /// Added tokens (id → literal text), matched whole in `encodeWithSpecial`: Agora's vocabulary has one,
  /// `<|endoftext|>`.
  public let addedTokens: [Int32: String]
  /// Ids the tokenizer puts before every encoded text (its post-processor's template, e.g. LLaMA's BOS);
  /// empty for Agora's vocabularies. `encodePrompt` adds them, `encode` does not.
  public let prefixIDs: [Int32]
  public var vocabSize: Int { tokenBytes.count }
  /// Whether the ids are Agora's layout (bytes, then merges in order, then `<|endoftext|>`).
  public let isAgoraLayout: Bool

  /// (left << 32 | right) → (rank, new id)
  let mergeTable: [UInt64: (Int32, Int32)]
  /// The id of each single byte.
  let byteIDs: [Int32]
  /// `tokenizers`' `ignore_merges`: a pre-token found in `wholeWords` is that one token.
  public let ignoresMerges: Bool
  let wholeWords: [[UInt8]: Int32]
  let pre = PreTokenizer()
  /// Cache of pre-token bytes → ids; the most common words are looked up, not merged again.
  private var cache: [ArraySlice<UInt8>: [Int32]] = [:]
  private let cacheLimit = 200_000

  /// Agora's layout: merge `r` creates id `256 + r`; `<|endoftext|>` is the last id.
  public convenience init(merges: [(Int32, Int32)]) throws {
    var bytes: [[UInt8]] = (0..<256).map { [UInt8($0)] }
    for (r, (a, b)) in merges.enumerated() {
      guard a >= 0, b >= 0, Int(a) < bytes.count, Int(b) < bytes.count else {
        throw ModelError.mismatch("merge \(r) refers to an id that does not exist yet (\(a), \(b))")
      }
      bytes.append(bytes[Int(a)] + bytes[Int(b)])
    }
    let eot = Int32(bytes.count)
    bytes.append([])
    try self.init(tokenBytes: bytes, merges: merges, addedTokens: [eot: Self.endOfText], eotID: eot)
  }

  /// Any byte-level BPE vocabulary: `tokenBytes[id]` (empty for added tokens), merges in rank order (each one's
  /// result must be in the vocabulary), the added tokens, the end-of-text id and the ids every text starts with.
  /// With `ignoresMerges` (the `tokenizers` option of that name), a pre-token that is itself in the vocabulary
  /// is that token, whatever the merges would make of it.
  public init(tokenBytes: [[UInt8]], merges: [(Int32, Int32)], addedTokens: [Int32: String], eotID: Int32, prefixIDs: [Int32] = [],
              ignoresMerges: Bool = false) throws {
    let n = tokenBytes.count
    guard n >= 1, n < 1 << 24 else { throw ModelError.mismatch("a vocabulary of \(n) tokens") }
    var idOfBytes: [[UInt8]: Int32] = [:]
    for (i, b) in tokenBytes.enumerated() where addedTokens[Int32(i)] == nil {
      guard !b.isEmpty else { throw ModelError.mismatch("token \(i) stands for no bytes and is not an added token") }
      guard idOfBytes[b] == nil else { throw ModelError.mismatch("tokens \(idOfBytes[b]!) and \(i) stand for the same bytes") }
      idOfBytes[b] = Int32(i)
    }
    for id in addedTokens.keys + [eotID] + prefixIDs where id < 0 || Int(id) >= n {
      throw ModelError.mismatch("token id \(id) lies outside the vocabulary of \(n)")
    }
    var byteIDs = [Int32](repeating: -1, count: 256)
    for b in 0..<256 {
      guard let id = idOfBytes[[UInt8(b)]] else {
        throw ModelError.mismatch("byte 0x\(String(b, radix: 16)) has no token of its own: not a byte-level vocabulary")
      }
      byteIDs[b] = id
    }
    var table: [UInt64: (Int32, Int32)] = [:]
    for (r, (a, b)) in merges.enumerated() {
      guard a >= 0, b >= 0, Int(a) < n, Int(b) < n, addedTokens[a] == nil, addedTokens[b] == nil,
            let c = idOfBytes[tokenBytes[Int(a)] + tokenBytes[Int(b)]] else {
        throw ModelError.mismatch("merge \(r) (\(a), \(b)) does not join two tokens into a third of the vocabulary")
      }
      let key = UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))
      guard table[key] == nil else { throw ModelError.mismatch("merge \(r) (\(a), \(b)) is repeated") }
      table[key] = (Int32(r), c)
    }
    self.merges = merges
    self.tokenBytes = tokenBytes
    self.addedTokens = addedTokens
    self.eotID = eotID
    self.prefixIDs = prefixIDs
    self.byteIDs = byteIDs
    self.ignoresMerges = ignoresMerges
    wholeWords = ignoresMerges ? idOfBytes : [:]
    mergeTable = table
    isAgoraLayout = eotID == Int32(n - 1) && addedTokens.count == 1 && prefixIDs.isEmpty && !ignoresMerges
      && (0..<256).allSatisfy { byteIDs[$0] == Int32($0) }
      && merges.indices.allSatisfy { table[UInt64(UInt32(merges[$0].0)) << 32 | UInt64(UInt32(merges[$0].1))]!.1 == Int32(256 + $0) }
  }

  /// The id of an added token by its literal text.
  public func addedTokenID(_ literal: String) -> Int32? { addedTokens.first { $0.value == literal }?.key }

  /// A tokenizer with the same vocabulary and an empty cache, for another thread.
  public func copy() -> Tokenizer { Tokenizer(sharing: self) }

  private init(sharing t: Tokenizer) {
    merges = t.merges
    tokenBytes = t.tokenBytes
    eotID = t.eotID
    addedTokens = t.addedTokens
    prefixIDs = t.prefixIDs
    isAgoraLayout = t.isAgoraLayout
    mergeTable = t.mergeTable
    byteIDs = t.byteIDs
    ignoresMerges = t.ignoresMerges
    wholeWords = t.wholeWords
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

  /// Encodes text where the literal text of an added token (`<|endoftext|>` in Agora's vocabularies) stands
  /// for that token, as `tokenizers` does; the longest one wins where two start at the same place.
  public func encodeWithSpecial(_ text: String) -> [Int32] {
    var out: [Int32] = []
    let specials = addedTokens.sorted { $0.value.utf8.count > $1.value.utf8.count }.filter { !$0.value.isEmpty }
    var rest = Substring(text)
    while !rest.isEmpty {
      var first: (Range<String.Index>, Int32)?
      for (id, lit) in specials {
        if let r = rest.range(of: lit), first == nil || r.lowerBound < first!.0.lowerBound { first = (r, id) }
      }
      guard let (r, id) = first else { break }
      encode(String(rest[..<r.lowerBound]), into: &out)
      out.append(id)
      rest = rest[r.upperBound...]
    }
    encode(String(rest), into: &out)
    return out
  }

  /// What a model is given for `text` (as `tokenizer(text)` in transformers): the template's prefix, then the
  /// text with added tokens recognised.
  public func encodePrompt(_ text: String) -> [Int32] { prefixIDs + encodeWithSpecial(text) }

  @inline(__always)
  func encodeWord(_ w: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
    if w.count == 1 { out.append(byteIDs[Int(w[0])]); return }
    let key = ArraySlice(w)
    if let hit = cache[key] { out.append(contentsOf: hit); return }
    if ignoresMerges, let id = wholeWords[Array(w)] { out.append(id); return }
    var sym = w.map { byteIDs[Int($0)] }
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

  /// The bytes of `ids` (an added token decodes to its literal text unless `skipAdded`).
  public func decodeBytes(_ ids: [Int32], skipAdded: Bool = false) -> [UInt8] {
    var out: [UInt8] = []
    for id in ids {
      if let lit = addedTokens[id] {
        if !skipAdded { out.append(contentsOf: Array(lit.utf8)) }
      } else if id >= 0, Int(id) < tokenBytes.count { out.append(contentsOf: tokenBytes[Int(id)]) }
    }
    return out
  }

  public func decode(_ ids: [Int32]) -> String { String(decoding: decodeBytes(ids), as: UTF8.self) }

  /// Number of UTF-8 bytes each id stands for (0 for the special token), for bits-per-byte.
  public lazy var byteLengths: [Int32] = tokenBytes.map { Int32($0.count) }
}
