import Foundation

/// Learns byte-level BPE merges from text in several languages, balanced across languages.
///
/// Each language's words are counted after GPT-2 pre-tokenisation and weighted by the inverse of that
/// language's byte count, so every language pulls on the vocabulary equally, however large its corpus.
/// Merges are chosen greedily by weighted pair frequency (ties by smaller pair ids), with a lazy max-heap
/// and incremental pair counts, as Hugging Face's trainer does.
public struct BPETrainer {
  public struct Report: Sendable {
    public var languages: [String] = []
    public var bytes: [String: Int] = [:]
    public var uniqueWords = 0
  }

  var words: [[Int32]] = []
  var weights: [Double] = []
  public private(set) var report = Report()

  public init() {}

  /// Adds one language's text (already limited to the share the caller wants to learn from).
  public mutating func addLanguage(_ name: String, texts: [String]) {
    let pre = PreTokenizer()
    var counts: [ArraySlice<UInt8>: Int] = [:]
    var total = 0
    for text in texts {
      var t = text
      total += t.utf8.count
      t.withUTF8 { buf in
        pre.split(buf) { s, e in counts[ArraySlice(buf[s..<e]), default: 0] += 1 }
      }
    }
    report.languages.append(name)
    report.bytes[name] = total
    guard total > 0 else { return }
    // Weight so that each language sums to about one million "bytes".
    let w = 1_000_000.0 / Double(total)
    // Dictionary order differs between instances and runs; sorted words make the floating-point sums,
    // and so the merges, the same every time.
    for word in counts.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
      words.append(word.map { Int32($0) })
      weights.append(Double(counts[word]!) * w)
    }
    report.uniqueWords = words.count
  }

  @inline(__always) static func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }

  /// Learns up to `vocabSize - 257` merges (256 bytes and `<|endoftext|>` take the rest).
  public mutating func train(vocabSize: Int, minFrequency: Double = 1e-6, progress: ((Int, Int) -> Void)? = nil) throws -> Tokenizer {
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
