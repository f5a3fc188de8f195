import Foundation

/// Learns byte-level BPE merges from text in several languages, balanced across languages.
///
/// The trainer sees text only as pre-token counts per language (`PreTokenCounts`, after GPT-2
/// pre-tokenisation), so merges learned from several nodes' count tables equal those learned from their texts.
/// Each language's counts are weighted (`Balance`) — by default by the inverse of its octets, so every
/// language pulls on the vocabulary equally, however large its corpus. Merges are chosen greedily by weighted
/// pair frequency (ties by smaller pair ids), with a lazy max-heap and incremental pair counts, as Hugging
/// Face's trainer does.
public struct BPETrainer {
  public struct Report: Sendable {
    public var languages: [String] = []
    public var bytes: [String: Int] = [:]
    public var uniqueWords = 0
    /// Each language's weight per occurrence in the last training (after balancing).
    public var weights: [String: Double] = [:]
  }

  /// How languages are weighed against each other.
  public enum Balance: Sendable, Equatable {
    /// Every language's occurrences weigh 10^6 / its octets: equal pull per language (the default).
    case bytes
    /// A sampling temperature τ over languages, in octets or characters: language ℓ pulls in proportion to
    /// n_ℓ^(1/τ) (τ = 1: as much as its text; τ → ∞: equally). `characters` counts Unicode scalars, so a
    /// language written with two-octet letters (Greek, Cyrillic) is not halved.
    case temperature(Double, characters: Bool)
    /// Equal pull per character, then `rounds` corrections: after each training, every language's weight is
    /// multiplied by (its tokens per character on its own counts / the median language's)^strength, so
    /// languages the vocabulary serves worse pull harder, and the merges are learned again. Characters are those
    /// of the counted pre-tokens: a node's thresholds drop rare words, more of them in a language of rich
    /// morphology or little text, and the language neither loses pull nor looks better served for it.
    case equalize(rounds: Int, strength: Double)
  }

  /// The pre-tokens of every language, as byte ids, with their raw counts and their language's index.
  var words: [[Int32]] = []
  var counts: [Double] = []
  var languageOf: [Int32] = []
  /// Per language: its text's octets and characters, and the characters of its counted pre-tokens (all of the
  /// text's when no threshold dropped any).
  var sizes: [(bytes: UInt64, characters: UInt64, counted: UInt64)] = []
  public private(set) var report = Report()

  public init() {}

  /// Adds one language's text (already limited to the share the caller wants to learn from).
  public mutating func addLanguage(_ name: String, texts: [String]) {
    add(PreTokenCounts.count(language: name, texts: texts))
  }

  /// Adds one language's counts (a node's table, or the sum of several). A language added twice is two
  /// languages to the balancing: merge the tables first.
  public mutating func add(_ table: PreTokenCounts) {
    report.languages.append(table.language)
    report.bytes[table.language] = Int(table.bytes)
    guard table.bytes > 0 else { return }
    let l = Int32(sizes.count)
    var counted: UInt64 = 0
    // Dictionary order differs between instances and runs; sorted words make the floating-point sums,
    // and so the merges, the same every time.
    for word in table.entries.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
      let n = table.entries[word]!.count
      words.append(word.map { Int32($0) })
      counts.append(Double(n))
      languageOf.append(l)
      // UTF-8: every octet but a continuation octet starts a character.
      counted &+= UInt64(word.reduce(0) { $0 + ($1 & 0xC0 == 0x80 ? 0 : 1) }) &* n
    }
    sizes.append((table.bytes, table.characters, counted))
    report.uniqueWords = words.count
  }

  /// Each language's weight per occurrence under `balance` (before any `equalize` correction).
  func languageWeights(_ balance: Balance) -> [Double] {
    switch balance {
    case .bytes:
      // Each language sums to about one million "bytes".
      return sizes.map { 1_000_000.0 / Double($0.bytes) }
    case .temperature(let tau, let chars):
      let n = sizes.map { Double(chars ? $0.characters : $0.bytes) }
      // Total pull n^(1/τ), per occurrence n^(1/τ − 1), scaled so the largest language's total is 10^6.
      let pull = n.map { pow($0, 1 / tau) }
      let top = pull.max() ?? 1
      return zip(n, pull).map { 1_000_000.0 * ($1 / top) / $0 }
    case .equalize:
      return sizes.map { 1_000_000.0 / Double(max(1, $0.counted)) }
    }
  }

  /// Learns up to `vocabSize - 257` merges under `balance`.
  public mutating func train(vocabSize: Int, balance: Balance, minFrequency: Double = 1e-6, progress: ((Int, Int) -> Void)? = nil) throws -> Tokenizer {
    var f = languageWeights(balance)
    guard case .equalize(let rounds, let strength) = balance, rounds > 0 else { return try train(vocabSize: vocabSize, languageWeights: f, minFrequency: minFrequency, progress: progress) }
    var tok = try train(vocabSize: vocabSize, languageWeights: f, minFrequency: minFrequency, progress: progress)
    for _ in 0..<rounds {
      let t = tokensPerCharacter(tok)
      let median = t.sorted()[t.count / 2]
      for l in f.indices where t[l] > 0 { f[l] *= pow(t[l] / median, strength) }
      tok = try train(vocabSize: vocabSize, languageWeights: f, minFrequency: minFrequency, progress: progress)
    }
    return tok
  }

  /// Each language's tokens per character under `tok`, on its own counts (the characters of its counted
  /// pre-tokens).
  public func tokensPerCharacter(_ tok: Tokenizer) -> [Double] {
    tokens(tok).enumerated().map { $0.element / Double(max(1, sizes[$0.offset].counted)) }
  }

  /// Each language's tokens per octet under `tok`, on its own counts (by language name; pre-tokens a node kept
  /// back are not counted, so this is a lower bound when thresholds dropped some).
  public func tokensPerByte(_ tok: Tokenizer) -> [String: Double] {
    let t = tokens(tok)
    let names = report.languages.filter { (report.bytes[$0] ?? 0) > 0 }
    return Dictionary(uniqueKeysWithValues: names.enumerated().map { ($0.element, t[$0.offset] / Double(max(1, sizes[$0.offset].bytes))) })
  }

  func tokens(_ tok: Tokenizer) -> [Double] {
    var tokens = [Double](repeating: 0, count: sizes.count)
    for (i, w) in words.enumerated() {
      tokens[Int(languageOf[i])] += Double(tok.encodePreToken(w.map { UInt8($0) }).count) * counts[i]
    }
    return tokens
  }

  /// Learns up to `vocabSize - 257` merges (256 bytes and `<|endoftext|>` take the rest), each language equal.
  public mutating func train(vocabSize: Int, minFrequency: Double = 1e-6, progress: ((Int, Int) -> Void)? = nil) throws -> Tokenizer {
    try train(vocabSize: vocabSize, balance: .bytes, minFrequency: minFrequency, progress: progress)
  }

  mutating func train(vocabSize: Int, languageWeights f: [Double], minFrequency: Double, progress: ((Int, Int) -> Void)?) throws -> Tokenizer {
    report.weights = [:]
    var l = 0
    for name in report.languages where (report.bytes[name] ?? 0) > 0 {
      report.weights[name] = f[l]
      l += 1
    }
    let weights = counts.indices.map { counts[$0] * f[Int(languageOf[$0])] }
    var words = self.words
    return try BPETrainer.learn(vocabSize: vocabSize, words: &words, weights: weights, minFrequency: minFrequency, progress: progress)
  }

  @inline(__always) static func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }

  static func learn(vocabSize: Int, words: inout [[Int32]], weights: [Double], minFrequency: Double, progress: ((Int, Int) -> Void)?) throws -> Tokenizer {
    guard vocabSize >= 257 else { throw ModelError.invalidConfig("vocabulary size \(vocabSize) must be at least 257") }
    let target = vocabSize - 257
    var counts: [UInt64: Double] = [:]
    var whereIs: [UInt64: [Int32]] = [:]
    for (wi, w) in words.enumerated() where w.count > 1 {
      for i in 0..<(w.count - 1) {
        let k = Self.key(w[i], w[i + 1])
        counts[k, default: 0] += weights[wi]
        whereIs[k, default: []].append(Int32(wi))
      }
    }
    var heap = PairHeap()
    for k in counts.keys.sorted() { heap.push(counts[k]!, k) }
    var merges: [(Int32, Int32)] = []
    while merges.count < target, let (c, k) = heap.pop() {
      let current = counts[k] ?? 0
      if current != c {
        if current > 0 { heap.push(current, k) }
        continue
      }
      if current <= minFrequency || current <= 0 { break }
      let a = Int32(truncatingIfNeeded: k >> 32), b = Int32(truncatingIfNeeded: k & 0xFFFF_FFFF)
      let newID = Int32(256 + merges.count)
      merges.append((a, b))
      var touched: Set<UInt64> = []
      let list = whereIs[k] ?? []
      whereIs[k] = nil
      var last: Int32 = -1
      for wi32 in list.sorted() where wi32 != last {
        last = wi32
        let wi = Int(wi32)
        let w = words[wi]
        guard w.count > 1 else { continue }
        let wt = weights[wi]
        // Does the word still contain the pair?
        var has = false
        for i in 0..<(w.count - 1) where w[i] == a && w[i + 1] == b { has = true; break }
        if !has { continue }
        for i in 0..<(w.count - 1) {
          let pk = Self.key(w[i], w[i + 1])
          counts[pk, default: 0] -= wt
        }
        var merged: [Int32] = []
        merged.reserveCapacity(w.count)
        var i = 0
        while i < w.count {
          if i + 1 < w.count, w[i] == a, w[i + 1] == b { merged.append(newID); i += 2 } else { merged.append(w[i]); i += 1 }
        }
        words[wi] = merged
        if merged.count > 1 {
          for j in 0..<(merged.count - 1) {
            let pk = Self.key(merged[j], merged[j + 1])
            counts[pk, default: 0] += wt
            if merged[j] == newID || merged[j + 1] == newID {
              whereIs[pk, default: []].append(wi32)
              touched.insert(pk)
            }
          }
        }
      }
      counts[k] = nil
      for pk in touched where pk != k { if let c = counts[pk], c > 0 { heap.push(c, pk) } }
      progress?(merges.count, target)
    }
    return try Tokenizer(merges: merges)
  }
}

/// A binary max-heap of (count, pair) ordered by count, then by smaller pair key.
struct PairHeap {
  var items: [(Double, UInt64)] = []

  @inline(__always) static func above(_ x: (Double, UInt64), _ y: (Double, UInt64)) -> Bool {
    x.0 > y.0 || (x.0 == y.0 && x.1 < y.1)
  }

  mutating func push(_ c: Double, _ k: UInt64) {
    items.append((c, k))
    var i = items.count - 1
    while i > 0 {
      let p = (i - 1) / 2
      if Self.above(items[i], items[p]) { items.swapAt(i, p); i = p } else { break }
    }
  }

  mutating func pop() -> (Double, UInt64)? {
    guard let top = items.first else { return nil }
    let last = items.removeLast()
    if !items.isEmpty {
      items[0] = last
      var i = 0
      while true {
        let l = 2 * i + 1, r = l + 1
        var m = i
        if l < items.count, Self.above(items[l], items[m]) { m = l }
        if r < items.count, Self.above(items[r], items[m]) { m = r }
        if m == i { break }
        items.swapAt(i, m)
        i = m
      }
    }
    return top
  }
}

extension BPETrainer.Balance: CustomStringConvertible {
  /// "bytes", "temperature:T", "temperature-characters:T", "equalize" or "equalize:ROUNDS:STRENGTH".
  public init(parsing s: String) throws {
    let p = s.split(separator: ":").map(String.init)
    func num(_ i: Int) throws -> Double {
      guard i < p.count, let v = Double(p[i]), v.isFinite, v > 0 else { throw ModelError.invalidConfig("balance \"\(s)\": a positive number expected") }
      return v
    }
    switch p.first {
    case "bytes" where p.count == 1: self = .bytes
    case "temperature" where p.count == 2: self = .temperature(try num(1), characters: false)
    case "temperature-characters" where p.count == 2: self = .temperature(try num(1), characters: true)
    case "equalize" where p.count == 1: self = .equalize(rounds: 6, strength: 1)
    case "equalize" where p.count == 3:
      let r = try num(1)
      guard r == r.rounded(), r <= 20 else { throw ModelError.invalidConfig("balance \"\(s)\": rounds must be a whole number up to 20") }
      self = .equalize(rounds: Int(r), strength: try num(2))
    default:
      throw ModelError.invalidConfig("balance \"\(s)\": use bytes, temperature:T, temperature-characters:T, equalize or equalize:ROUNDS:STRENGTH")
    }
  }

  public var description: String {
    switch self {
    case .bytes: return "bytes"
    case .temperature(let t, let c): return (c ? "temperature-characters:" : "temperature:") + "\(t)"
    case .equalize(let r, let s): return "equalize:\(r):\(s)"
    }
  }
}
