import AgoraModel
import AgoraTensor
import AgoraWire
import Foundation

/// The text a trainer learns from: one or more languages, each a directory with `train.txt` and,
/// optionally, `valid.txt`. A directory that itself holds `train.txt` is one language named after it;
/// otherwise each of its subdirectories with a `train.txt` is one.
public struct LanguageSource: Sendable, Equatable {
  public var name: String
  public var train: String
  public var valid: String?

  public init(name: String, train: String, valid: String?) {
    self.name = name
    self.train = train
    self.valid = valid
  }

  public static func discover(_ dirs: [String]) throws -> [LanguageSource] {
    let fm = FileManager.default
    var out: [LanguageSource] = []
    for dir in dirs {
      func source(_ d: String) -> LanguageSource? {
        let t = (d as NSString).appendingPathComponent("train.txt")
        guard fm.fileExists(atPath: t) else { return nil }
        let v = (d as NSString).appendingPathComponent("valid.txt")
        return LanguageSource(name: (d as NSString).lastPathComponent, train: t, valid: fm.fileExists(atPath: v) ? v : nil)
      }
      var isDir: ObjCBool = false
      guard fm.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
        throw DataError.missingSource("\(dir) is not a directory")
      }
      if let s = source(dir) { out.append(s); continue }
      let subs = (try? fm.contentsOfDirectory(atPath: dir))?.sorted() ?? []
      let found = subs.compactMap { source((dir as NSString).appendingPathComponent($0)) }
      guard !found.isEmpty else { throw DataError.empty("\(dir) has no train.txt and no language subdirectories with one") }
      out += found
    }
    // Language names come from directory names and go on the wire (UPLOAD_END, EVALUATION), into logs, pages and
    // plots: they must be names the wire allows (SPEC §3.1), never a line break or a terminal escape.
    for s in out where !LanguageTokens.isValidName(s.name) {
      throw DataError.badLanguageName(directory: (s.train as NSString).deletingLastPathComponent)
    }
    let names = out.map(\.name)
    guard Set(names).count == names.count else { throw DataError.missingSource("language names repeat: \(names)") }
    return out
  }
}

/// Token streams of every language, built on first use and cached under `cacheDir`.
public final class TokenizedCorpus: @unchecked Sendable {
  public let languages: [String]
  public let train: [TokenStream]
  public let valid: [TokenStream?]

  public init(sources: [LanguageSource], tokenizer: Tokenizer, tokenizerPath: String, cacheDir: String,
              log: (String) -> Void = { _ in }) throws {
    try FileManager.default.createDirectory(atPath: cacheDir, withIntermediateDirectories: true)
    let tfp = fnv1a(tokenizer.jsonData())
    var jobs: [(String, String)] = []
    for s in sources {
      jobs.append((s.train, (cacheDir as NSString).appendingPathComponent("\(s.name).train.tok")))
      if let v = s.valid { jobs.append((v, (cacheDir as NSString).appendingPathComponent("\(s.name).valid.tok"))) }
    }
    // Reuse a valid cache; otherwise tokenize, languages in parallel, one tokenizer per thread.
    var results = [Result<TokenStream, Error>?](repeating: nil, count: jobs.count)
    let lock = NSLock()
    DispatchQueue.concurrentPerform(iterations: jobs.count) { i in
      let (src, dst) = jobs[i]
      let r: Result<TokenStream, Error>
      if let s = try? TokenStream(path: dst, tokenizerFingerprint: tfp, sourceFingerprint: TokenStream.fingerprint(ofFile: src)) {
        r = .success(s)
      } else {
        r = Result {
          let tok = tokenizer.copy()
          return try TokenStream.build(source: src, path: dst, tokenizer: tok, tokenizerFingerprint: tfp)
        }
      }
      lock.lock(); results[i] = r; lock.unlock()
    }
    var streams: [TokenStream] = []
    for r in results { streams.append(try r!.get()) }
    var t: [TokenStream] = [], v: [TokenStream?] = []
    var k = 0
    for s in sources {
      t.append(streams[k]); k += 1
      if s.valid != nil { v.append(streams[k]); k += 1 } else { v.append(nil) }
      log("  \(s.name): \(t.last!.count) train tokens (\(String(format: "%.3f", Double(t.last!.count) / Double(max(1, t.last!.sourceBytes)))) tokens/byte)")
    }
    languages = sources.map(\.name)
    train = t
    valid = v
  }

  /// How often each of `vocabSize` token ids occurs in the training text.
  public func tokenCounts(vocabSize: Int) -> [Int] {
    var counts = [Int](repeating: 0, count: vocabSize)
    for t in train { t.count(into: &counts) }
    return counts
  }

  /// Which of `vocabSize` token ids occur in the training text.
  public func tokensPresent(vocabSize: Int) -> [Bool] { tokenCounts(vocabSize: vocabSize).map { $0 > 0 } }
}

/// Draws training batches: each row picks a language by the mixture weights, then a random window.
/// Batch `i` depends only on the seed and `i`, so a resumed run draws exactly the batches it would have.
public struct MixtureSampler: Sendable {
  public let corpus: TokenizedCorpus
  public let weights: [Double]
  public let seed: UInt64

  /// `weights` default to equal shares for every language (the data's size does not decide the mix).
  public init(corpus: TokenizedCorpus, weights: [Double]? = nil, seed: UInt64) throws {
    self.corpus = corpus
    let w = weights ?? [Double](repeating: 1, count: corpus.languages.count)
    guard w.count == corpus.languages.count, w.allSatisfy({ $0 >= 0 && $0.isFinite }), w.reduce(0, +) > 0 else {
      throw DataError.empty("mixture weights \(w) do not fit languages \(corpus.languages)")
    }
    self.weights = w.map { $0 / w.reduce(0, +) }
    self.seed = seed
  }

  /// The language index of each row of batch `index` (the same draws `batch` makes).
  public func languages(_ index: Int, B: Int) -> [Int] {
    var rng = SplitMix64.derived(seed, UInt64(index))
    return (0..<B).map { _ in
      let lang = SplitMix64.pick(weights, at: rng.nextUnit())
      _ = rng.next()
      return lang
    }
  }

  /// Batch number `index` of B rows of T+1 tokens: (tokens, targets), each B·T. `rows`: only these rows of
  /// the batch (what one of several processes that share a batch trains on: every row drawn by exactly one).
  public func batch(_ index: Int, B: Int, T: Int, rows: Range<Int>? = nil) throws -> (tokens: [Int32], targets: [Int32]) {
    let rows = rows ?? 0..<B
    precondition(rows.lowerBound >= 0 && rows.upperBound <= B, "MixtureSampler.batch: rows outside the batch")
    var rng = SplitMix64.derived(seed, UInt64(index))
    var tokens = [Int32](repeating: 0, count: rows.count * T), targets = tokens
    var window = [Int32](repeating: 0, count: T + 1)
    for b in 0..<rows.upperBound {
      let lang = SplitMix64.pick(weights, at: rng.nextUnit())
      let s = corpus.train[lang]
      guard s.count > T + 1 else { throw DataError.empty("\(corpus.languages[lang]) has \(s.count) tokens, fewer than T+1 = \(T + 1)") }
      let start = Int(rng.next() % UInt64(s.count - T - 1))
      guard rows.contains(b) else { continue }
      let o = (b - rows.lowerBound) * T
      window.withUnsafeMutableBufferPointer { s.copy(start: start, count: T + 1, into: $0.baseAddress!) }
      for t in 0..<T {
        tokens[o + t] = window[t]
        targets[o + t] = window[t + 1]
      }
    }
    return (tokens, targets)
  }
}
