import Foundation

/// What a node sends in the vocabulary phase instead of its text (SPEC §4.4): for one language, how often each
/// pre-token (the GPT-2 pre-tokeniser's pieces, as octets) occurs in its text, plus the text's size in octets
/// and characters. BPE merges learned from the sum of several nodes' tables equal the merges learned from the
/// union of their texts (`BPETrainer`), because the trainer sees text only through these counts.
///
/// Privacy: a rare pre-token (a name, an address) can identify a person. Before a table leaves the node,
/// `thresholded` drops every entry seen fewer than k times or in fewer than m documents, after optional
/// Gaussian noise on the counts. A document is a block of lines between blank lines; a text with no blank line
/// counts each line as a document.
public struct PreTokenCounts: Sendable, Equatable {
  public struct Entry: Sendable, Equatable {
    public var count: UInt64
    /// Documents it occurs in (kept on the node; not in the encoded table).
    public var documents: UInt32
    public init(count: UInt64, documents: UInt32) {
      self.count = count
      self.documents = documents
    }
  }

  public var language: String
  /// The counted text's UTF-8 octets and Unicode scalars (a language's weight uses them; entries dropped by
  /// the thresholds still count here).
  public var bytes: UInt64
  public var characters: UInt64
  public var documents: UInt64
  public var entries: [[UInt8]: Entry]

  public init(language: String, bytes: UInt64 = 0, characters: UInt64 = 0, documents: UInt64 = 0, entries: [[UInt8]: Entry] = [:]) {
    self.language = language
    self.bytes = bytes
    self.characters = characters
    self.documents = documents
    self.entries = entries
  }

  /// Counts `texts` of one language (each text: a file's contents).
  public static func count(language: String, texts: [String]) -> PreTokenCounts {
    var c = PreTokenCounts(language: language)
    var tally = Tally()
    scan(texts, sizes: { bytes, characters, documents in
      c.bytes += bytes
      c.characters += characters
      c.documents += documents
    }) { w, doc in tally.add(w, document: doc) }
    c.entries = tally.entries
    return c
  }

  /// Occurrences and documents of octet strings, as they are met in a scan (a document counted once per string).
  struct Tally {
    var seen: [ArraySlice<UInt8>: (count: UInt64, documents: UInt32, last: Int)] = [:]

    mutating func add(_ w: ArraySlice<UInt8>, document doc: Int) {
      if var x = seen[w] {
        x.count += 1
        if x.last != doc { x.documents += 1; x.last = doc }
        seen[w] = x
      } else {
        seen[w] = (1, 1, doc)
      }
    }

    var entries: [[UInt8]: Entry] {
      var out: [[UInt8]: Entry] = Dictionary(minimumCapacity: seen.count)
      for (w, x) in seen { out[Array(w)] = Entry(count: x.count, documents: x.documents) }
      return out
    }
  }

  /// Pre-tokenises `texts` whole (as `BPETrainer.addLanguage` does) and calls `piece` with each pre-token and the
  /// number of the document it starts in (from 1, across the texts). Document boundaries: after each blank line's
  /// first newline, or after every newline in a text with no blank line. `sizes` gets each text's octets, Unicode
  /// scalars and non-empty documents.
  static func scan(_ texts: [String], sizes: (UInt64, UInt64, UInt64) -> Void, piece: (ArraySlice<UInt8>, Int) -> Void) {
    let pre = PreTokenizer()
    var doc = 0
    for text in texts {
      var t = text
      t.withUTF8 { buf in
        // Unicode scalars: octets that do not continue a sequence.
        var scalars: UInt64 = 0
        for b in buf where b & 0xC0 != 0x80 { scalars += 1 }
        let blocks = PreTokenCounts.hasBlankLine(buf)
        var ends: [Int] = []
        for i in 0..<buf.count where buf[i] == 0x0A && (!blocks || (i + 1 < buf.count && buf[i + 1] == 0x0A)) { ends.append(i + 1) }
        if ends.last != buf.count { ends.append(buf.count) }
        var next = 0
        var opened = -1
        pre.split(buf) { s, e in
          while next < ends.count - 1 && s >= ends[next] { next += 1 }
          if opened != next {
            opened = next
            doc += 1
          }
          piece(ArraySlice(buf[s..<e]), doc)
        }
        // Documents: the non-empty ones.
        var documents: UInt64 = 0
        var from = 0
        for e in ends {
          if e > from, buf[from..<e].contains(where: { $0 != 0x0A }) { documents += 1 }
          from = e
        }
        sizes(UInt64(buf.count), scalars, documents)
      }
    }
  }

  static func hasBlankLine(_ buf: UnsafeBufferPointer<UInt8>) -> Bool {
    guard buf.count >= 2 else { return false }
    for i in 0..<(buf.count - 1) where buf[i] == 0x0A && buf[i + 1] == 0x0A { return true }
    return false
  }

  /// What `thresholded` kept and dropped.
  public struct Filtered: Sendable, Equatable {
    public var kept = 0, dropped = 0
    public var keptOccurrences: UInt64 = 0, droppedOccurrences: UInt64 = 0
  }

  /// The table without entries seen fewer than `minCount` times or in fewer than `minDocuments` documents; with
  /// `noise` > 0, each count first gets Gaussian noise of that standard deviation (rounded; the threshold then
  /// applies to the noisy count). `random` gives uniform words for the noise (a cryptographic source on nodes).
  public func thresholded(minCount: UInt64, minDocuments: UInt32, noise: Double = 0, random: () -> UInt64 = { UInt64.random(in: 0...UInt64.max) })
    -> (PreTokenCounts, Filtered) {
    var out = PreTokenCounts(language: language, bytes: bytes, characters: characters, documents: documents)
    var f = Filtered()
    for (w, e) in entries {
      var count = e.count
      if noise > 0 {
        // Box–Muller from two 53-bit uniforms.
        let u1 = (Double(random() >> 11) + 1) / 9_007_199_254_740_992, u2 = Double(random() >> 11) / 9_007_199_254_740_992
        let z = (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
        count = UInt64(max(0, (Double(e.count) + noise * z).rounded()))
      }
      if count >= max(1, minCount) && e.documents >= minDocuments {
        out.entries[w] = Entry(count: count, documents: e.documents)
        f.kept += 1
        f.keptOccurrences += e.count
      } else {
        f.dropped += 1
        f.droppedOccurrences += e.count
      }
    }
    return (out, f)
  }

  /// Adds another table of the same language (another node's, or the public corpus's).
  public mutating func merge(_ o: PreTokenCounts) throws {
    guard o.language == language else { throw VocabularyError.table("cannot add counts of \(o.language) to \(language)") }
    bytes += o.bytes
    characters += o.characters
    documents += o.documents
    addEntries(o.entries)
  }

  /// Adds counts (and documents) entry by entry.
  mutating func addEntries(_ more: [[UInt8]: Entry]) {
    for (w, e) in more {
      if var x = entries[w] {
        x.count += e.count
        x.documents += e.documents
        entries[w] = x
      } else {
        entries[w] = e
      }
    }
  }

  // MARK: - The table on the wire

  static let magic: [UInt8] = Array("AGVC".utf8)
  static let version: UInt8 = 1
  /// Limits a decoder enforces (a pre-token of the GPT-2 pre-tokeniser is one run of letters, digits,
  /// punctuation or spaces; a table of one language).
  public static let maxPreTokenBytes = 1 << 16
  public static let maxEntries = 1 << 24

  /// "AGVC" ‖ version: u8 ‖ language (u8 length ‖ UTF-8) ‖ bytes ‖ characters ‖ documents ‖ entries (each a
  /// LEB128 varint), then per entry in strictly increasing octet order: length (varint, ≥ 1) ‖ the pre-token's
  /// octets ‖ count (varint, ≥ 1). Documents per entry stay on the node.
  public func encoded() -> [UInt8] {
    var out = PreTokenCounts.magic + [PreTokenCounts.version]
    let name = Array(language.utf8)
    out.append(UInt8(min(name.count, 255)))
    out += name.prefix(255)
    for v in [bytes, characters, documents, UInt64(entries.count)] { PreTokenCounts.putVarint(v, &out) }
    for w in entries.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
      PreTokenCounts.putVarint(UInt64(w.count), &out)
      out += w
      PreTokenCounts.putVarint(entries[w]!.count, &out)
    }
    return out
  }

  /// Decodes a table; anything but a well-formed one (wrong head, a truncated entry, entries out of order or
  /// repeated, a zero count, octets left over) is a `VocabularyError`.
  public init(decoding data: [UInt8]) throws {
    var r = Reader(data: data)
    guard try r.take(4) == PreTokenCounts.magic else { throw VocabularyError.table("not a pre-token count table (no \"AGVC\")") }
    let v = try r.byte()
    guard v == PreTokenCounts.version else { throw VocabularyError.table("table version \(v); this software reads \(PreTokenCounts.version)") }
    let nameBytes = try r.take(Int(try r.byte()))
    guard let name = String(validating: nameBytes, as: UTF8.self), !name.isEmpty else { throw VocabularyError.table("the language name is empty or not UTF-8") }
    language = name
    bytes = try r.varint()
    characters = try r.varint()
    documents = try r.varint()
    let n = try r.varint()
    guard n <= UInt64(PreTokenCounts.maxEntries) else { throw VocabularyError.table("\(n) entries; at most \(PreTokenCounts.maxEntries)") }
    entries = Dictionary(minimumCapacity: Int(n))
    var previous: [UInt8]? = nil
    for k in 0..<Int(n) {
      let len = try r.varint()
      guard len >= 1, len <= UInt64(PreTokenCounts.maxPreTokenBytes) else { throw VocabularyError.table("entry \(k): a pre-token of \(len) octets") }
      let w = try r.take(Int(len))
      let count = try r.varint()
      guard count >= 1 else { throw VocabularyError.table("entry \(k): a count of 0") }
      if let p = previous, !p.lexicographicallyPrecedes(w) { throw VocabularyError.table("entry \(k): not after the previous one (order or repetition)") }
      previous = w
      entries[w] = Entry(count: count, documents: 0)
    }
    guard r.offset == data.count else { throw VocabularyError.table("\(data.count - r.offset) octets after the last entry") }
  }

  static func putVarint(_ v: UInt64, _ out: inout [UInt8]) {
    var v = v
    while v >= 0x80 {
      out.append(UInt8(v & 0x7F) | 0x80)
      v >>= 7
    }
    out.append(UInt8(v))
  }

  struct Reader {
    let data: [UInt8]
    var offset = 0
    mutating func byte() throws -> UInt8 {
      guard offset < data.count else { throw VocabularyError.table("truncated at octet \(offset)") }
      offset += 1
      return data[offset - 1]
    }
    mutating func take(_ n: Int) throws -> [UInt8] {
      guard n >= 0, n <= data.count - offset else { throw VocabularyError.table("truncated at octet \(offset) (\(n) more needed)") }
      offset += n
      return Array(data[(offset - n)..<offset])
    }
    mutating func varint() throws -> UInt64 {
      var v: UInt64 = 0, shift: UInt64 = 0
      while true {
        let b = try byte()
        guard shift < 64, shift < 63 || b <= 1 else { throw VocabularyError.table("a varint longer than 64 bits at octet \(offset)") }
        v |= UInt64(b & 0x7F) << shift
        if b & 0x80 == 0 { return v }
        shift += 7
      }
    }
  }
}

/// A malformed or mismatched count table, or a vocabulary that cannot be learned from the tables given.
public enum VocabularyError: Error, Equatable, CustomStringConvertible {
  case table(String)

  public var description: String {
    switch self {
    case .table(let s): return "pre-token count table: \(s)"
    }
  }
}
