import AgoraModel
import AgoraTensor
import Foundation

/// What `Generator.generate` is asked to do besides sampling.
public struct GenerationSettings: Sendable {
  public var sampling = SamplingSettings()
  public var maxNewTokens = 128
  /// Generation ends when the text produced contains one of these (the stop string itself is left out).
  public var stop: [String] = []
  /// Whether the end-of-text token ends a completion (benchmarks that must decode a fixed count turn it off,
  /// as transformers' `min_new_tokens` does).
  public var stopAtEnd = true
  public init() {}
}

/// Why a completion ended.
public enum FinishReason: String, Sendable, Codable {
  /// The model produced its end-of-text token.
  case eos
  /// A stop string appeared.
  case stop
  /// `maxNewTokens` were produced.
  case length
  /// The model's context is full.
  case context
}

/// One prompt's result.
public struct Completion: Sendable {
  public var promptTokens: Int
  /// The new token ids (the end-of-text token, when it ended the completion, is not among them).
  public var tokens: [Int32]
  public var text: String
  public var finishReason: FinishReason
}

/// Timings of one `generate` call.
public struct GenerationTimings: Sendable {
  /// Wall time of the prefill (every prompt's), until the first new token is known.
  public var prefillSeconds: Double
  /// Wall time of the decoding steps after the first token.
  public var decodeSeconds: Double
  /// Tokens produced by those steps (over all prompts).
  public var decodeTokens: Int
  public var decodeTokensPerSecond: Double { decodeSeconds > 0 ? Double(decodeTokens) / decodeSeconds : 0 }
}

/// Text generation over a `Decoder`: prompts are encoded as transformers' tokenizer does, prefilled with
/// matrix products (reusing a slot's cached prefix), then decoded a step at a time for every unfinished prompt
/// together, each with its own sampler. Text streams out as it becomes whole UTF-8 that cannot be the start
/// of a stop string.
public final class Generator {
  public let decoder: Decoder
  public let tokenizer: Tokenizer
  /// Tokens that end a completion (the tokenizer's end-of-text token, and the config's `eos_token_id`s).
  public let endTokens: Set<Int32>
  /// What each cache slot holds (its tokens, in position order).
  var cached: [[Int32]]

  public init(config: GPTConfig, parameters: FloatBuffer, tokenizer: Tokenizer, slots: Int = 1, endTokens: Set<Int32> = []) throws {
    guard tokenizer.vocabSize == config.vocabSize else {
      throw ModelError.mismatch("the tokenizer has \(tokenizer.vocabSize) tokens, the model \(config.vocabSize)")
    }
    decoder = try Decoder(config: config, parameters: parameters, slots: slots, maxRows: max(slots, min(256, config.contextLength)))
    self.tokenizer = tokenizer
    self.endTokens = endTokens.union([tokenizer.eotID])
    cached = Array(repeating: [], count: slots)
  }

  /// Loads a model directory (config.json, model.safetensors, tokenizer.json).
  public convenience init(modelDirectory dir: String, slots: Int = 1) throws {
    let config = try Checkpoint.readConfig((dir as NSString).appendingPathComponent(Checkpoint.configFile))
    let tokenizer = try Tokenizer(contentsOf: (dir as NSString).appendingPathComponent(Checkpoint.tokenizerFile))
    let params = FloatBuffer(count: ParameterLayout(config).count)
    let st = try SafeTensors(path: (dir as NSString).appendingPathComponent(Checkpoint.modelFile))
    for t in ParameterLayout(config).tensors { try st.copyConverting(t.name, shape: t.shape, into: params.pointer + t.offset) }
    for i in 0..<params.count where !params.pointer[i].isFinite {
      throw ModelError.file(path: dir + "/" + Checkpoint.modelFile, problem: "parameter \(i) is not finite")
    }
    try self.init(config: config, parameters: params, tokenizer: tokenizer, slots: slots)
  }

  /// Generates a completion of each prompt (token ids, as `tokenizer.encodePrompt` makes them), at most
  /// `decoder.slots` at once. `onText(i, piece)` receives prompt i's text as it comes.
  public func generate(_ prompts: [[Int32]], _ settings: GenerationSettings,
                       onText: ((Int, String) -> Void)? = nil) throws -> ([Completion], GenerationTimings) {
    try settings.sampling.validate()
    guard settings.maxNewTokens >= 0 else { throw GenerationError.badSetting("max new tokens \(settings.maxNewTokens) must be ≥ 0") }
    guard prompts.count <= decoder.slots else { throw GenerationError.badSetting("\(prompts.count) prompts for \(decoder.slots) slots") }
    let ctx = decoder.config.contextLength
    for (i, pr) in prompts.enumerated() {
      guard !pr.isEmpty else { throw GenerationError.emptyPrompt(i) }
      guard pr.count < ctx else { throw GenerationError.promptTooLong(prompt: i, tokens: pr.count, context: ctx) }
      for t in pr where t < 0 || Int(t) >= decoder.config.vocabSize { throw GenerationError.badToken(t, vocabulary: decoder.config.vocabSize) }
    }
    var streams = prompts.indices.map { TextStream(stop: settings.stop, index: $0, onText: onText) }
    var samplers = prompts.indices.map { Sampler(settings.sampling, stream: UInt64($0)) }
    var history = prompts
    var done = [FinishReason?](repeating: nil, count: prompts.count)
    var newTokens = [[Int32]](repeating: [], count: prompts.count)

    // Prefill: each prompt after what its slot already holds, in pieces of at most maxRows rows.
    let t0 = DispatchTime.now().uptimeNanoseconds
    var next = [Int32](repeating: 0, count: prompts.count)
    for (i, pr) in prompts.enumerated() {
      var start = zip(cached[i], pr).prefix { $0 == $1 }.count
      start = min(start, pr.count - 1)  // the last prompt token is always computed: its logits are needed
      cached[i] = Array(pr[..<start])
      var logits: [Float] = []
      while start < pr.count {
        let end = min(pr.count, start + decoder.maxRows)
        let rows = (start..<end).map { Decoder.Row(slot: i, position: $0, token: pr[$0], wantsLogits: $0 == pr.count - 1) }
        if let l = try decoder.forward(rows).last { logits = l }
        cached[i] += pr[start..<end]
        start = end
      }
      if settings.maxNewTokens == 0 { done[i] = .length; continue }
      next[i] = try samplers[i].next(logits, history: history[i])
    }
    let t1 = DispatchTime.now().uptimeNanoseconds
    var decodeTokens = 0
    // Decode: take each unfinished prompt's token, then compute all of them in one pass.
    while true {
      var rows: [Decoder.Row] = [], owners: [Int] = []
      for i in prompts.indices where done[i] == nil {
        let tok = next[i]
        if settings.stopAtEnd && endTokens.contains(tok) { done[i] = .eos; continue }
        newTokens[i].append(tok)
        history[i].append(tok)
        if streams[i].add(tokenizer.decodeBytes([tok], skipAdded: true)) { done[i] = .stop; continue }
        if newTokens[i].count >= settings.maxNewTokens { done[i] = .length; continue }
        if history[i].count >= ctx { done[i] = .context; continue }
        rows.append(Decoder.Row(slot: i, position: history[i].count - 1, token: tok, wantsLogits: true))
        owners.append(i)
      }
      if rows.isEmpty { break }
      let logits = try decoder.forward(rows)
      decodeTokens += rows.count
      for (k, i) in owners.enumerated() {
        cached[i].append(next[i])
        next[i] = try samplers[i].next(logits[k], history: history[i])
      }
    }
    let t2 = DispatchTime.now().uptimeNanoseconds
    var out: [Completion] = []
    for i in prompts.indices {
      out.append(Completion(promptTokens: prompts[i].count, tokens: newTokens[i], text: streams[i].finish(), finishReason: done[i] ?? .length))
    }
    return (out, GenerationTimings(prefillSeconds: Double(t1 - t0) / 1e9, decodeSeconds: Double(t2 - t1) / 1e9, decodeTokens: decodeTokens))
  }

  /// Encodes text prompts and generates (see `generate(_:_:onText:)`).
  public func generate(texts: [String], _ settings: GenerationSettings, onText: ((Int, String) -> Void)? = nil) throws -> ([Completion], GenerationTimings) {
    try generate(texts.map { tokenizer.encodePrompt($0) }, settings, onText: onText)
  }
}

/// A completion's text as it grows: octets become text once they are whole UTF-8, and text is held back
/// while it could still turn into a stop string.
struct TextStream {
  let stop: [String]
  let index: Int
  let onText: ((Int, String) -> Void)?
  var bytes: [UInt8] = []
  /// Octets already given to `onText`.
  var emitted = 0
  /// Where a stop string began, once one has.
  var cut: Int? = nil

  init(stop: [String], index: Int, onText: ((Int, String) -> Void)?) {
    self.stop = stop.filter { !$0.isEmpty }
    self.index = index
    self.onText = onText
  }

  /// Adds a token's octets; true when a stop string is now complete.
  mutating func add(_ b: [UInt8]) -> Bool {
    bytes += b
    for s in stop {
      let pat = Array(s.utf8)
      if let at = Self.find(pat, in: bytes, from: max(0, emitted - pat.count)) {
        cut = min(cut ?? at, at)
      }
    }
    if let cut {
      emit(upTo: cut)
      return true
    }
    // Hold back the longest tail that begins some stop string, and any incomplete UTF-8 sequence.
    var safe = bytes.count
    for s in stop {
      let pat = Array(s.utf8)
      for k in stride(from: min(pat.count - 1, bytes.count), through: 1, by: -1) where Array(bytes[(bytes.count - k)...]) == Array(pat[..<k]) {
        safe = min(safe, bytes.count - k)
        break
      }
    }
    emit(upTo: Self.wholeUTF8(bytes, upTo: safe))
    return false
  }

  mutating func emit(upTo end: Int) {
    guard end > emitted else { return }
    onText?(index, String(decoding: bytes[emitted..<end], as: UTF8.self))
    emitted = end
  }

  /// The whole text (up to a stop string), after giving `onText` what it has not had.
  mutating func finish() -> String {
    let end = cut ?? bytes.count
    emit(upTo: end)
    return String(decoding: bytes[..<end], as: UTF8.self)
  }

  /// The largest index ≤ `end` that does not cut a UTF-8 sequence.
  static func wholeUTF8(_ b: [UInt8], upTo end: Int) -> Int {
    var i = end
    var back = 0
    while i > 0 && back < 4 && b[i - 1] & 0xC0 == 0x80 { i -= 1; back += 1 }
    guard i > 0 else { return end }
    let lead = b[i - 1]
    let need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
    return need > back + 1 ? i - 1 : end
  }

  static func find(_ pat: [UInt8], in b: [UInt8], from: Int) -> Int? {
    guard !pat.isEmpty, b.count >= pat.count else { return nil }
    var i = from
    while i + pat.count <= b.count {
      if b[i] == pat[0] && Array(b[i..<(i + pat.count)]) == pat { return i }
      i += 1
    }
    return nil
  }
}
