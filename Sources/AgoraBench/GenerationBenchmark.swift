import AgoraGeneration
import AgoraModel
import AgoraTensor
import Foundation

/// Decoding speed at batch 1 (`agora bench generate`, `scripts/bench-peers generate`): time to first token of
/// a prompt, decoding tokens per second, peak memory, and the machine's memory bandwidth measured in the same
/// run, against which decoding (which reads every weight once per token) is put as a share.
public enum GenerationBenchmark {
  public struct Result: Sendable {
    public var preset: String
    public var parameters: Int
    public var promptTokens: Int, newTokens: Int
    public var timeToFirstTokenMs: Double
    public var decodeTokensPerSecond: Double
    public var weightBytesPerToken: Int
    public var triadGBps: Double
    public var peakRSSMiB: Double
    /// Weight octets read per second while decoding, over the triad's bandwidth.
    public var bandwidthShare: Double { Double(weightBytesPerToken) * decodeTokensPerSecond / (triadGBps * 1e9) }

    public var json: String {
      String(format: "{\"side\":\"agora\",\"preset\":\"%@\",\"parameters\":%d,\"prompt_tokens\":%d,\"new_tokens\":%d,\"threads\":%d,\"ttft_ms\":%.2f,\"decode_tokens_per_s\":%.1f,\"weight_mb_per_token\":%.1f,\"triad_gbps\":%.2f,\"bandwidth_share\":%.3f,\"peak_rss_mib\":%.1f}",
             preset, parameters, promptTokens, newTokens, Parallel.threads, timeToFirstTokenMs, decodeTokensPerSecond, Double(weightBytesPerToken) / 1e6, triadGBps,
             bandwidthShare, peakRSSMiB)
    }
  }

  /// A tokenizer of exactly `vocabSize` tokens (two-byte merges), for models whose text does not matter.
  public static func syntheticTokenizer(vocabSize: Int) throws -> Tokenizer {
    try Tokenizer(merges: (0..<(vocabSize - 257)).map { (Int32($0 / 256 % 256), Int32($0 % 256)) })
  }

  /// Writes a randomly initialised model of `preset` as a Hugging Face directory (what transformers loads too).
  public static func makeCheckpoint(preset: String, dir: String, seed: UInt64 = 1) throws {
    let c = try GPTConfig.preset(preset)
    let params = FloatBuffer(count: ParameterLayout(c).count)
    GPT.initialise(params, layout: ParameterLayout(c), seed: seed)
    try Checkpoint.save(parameters: params, config: c, tokenizer: try syntheticTokenizer(vocabSize: c.vocabSize), to: dir)
  }

  /// STREAM's triad, a = b + s·c over three arrays of `megabytes` each, on every thread; the best of `repeats`,
  /// counting 3 arrays' octets per pass (STREAM's convention: two read, one written).
  public static func triadGBps(megabytes: Int = 128, repeats: Int = 7) -> Double {
    let n = megabytes << 18
    let a = FloatBuffer(count: n), b = FloatBuffer(count: n), c = FloatBuffer(count: n)
    for i in 0..<n { b.pointer[i] = 1; c.pointer[i] = 2 }
    var best = 0.0
    for _ in 0..<repeats {
      let t0 = DispatchTime.now().uptimeNanoseconds
      Parallel.forRange(n, minChunk: 1 << 16) { s, e in
        let (pa, pb, pc) = (a.pointer, b.pointer, c.pointer)
        for i in s..<e { pa[i] = pb[i] + 3 * pc[i] }
      }
      let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
      best = max(best, Double(3 * 4 * n) / dt / 1e9)
    }
    return best
  }

  /// Median time to first token and decoding rate over `repeats` generations (greedy, the end token ignored),
  /// each from a fresh random prompt of `promptTokens`.
  public static func run(dir: String, preset: String, promptTokens: Int, newTokens: Int, repeats: Int) throws -> Result {
    let gen = try Generator(modelDirectory: dir)
    guard promptTokens >= 1, newTokens >= 2, promptTokens + newTokens <= gen.decoder.config.contextLength else {
      throw GenerationError.badSetting("\(promptTokens) prompt + \(newTokens) new tokens do not fit the context of \(gen.decoder.config.contextLength)")
    }
    let V = gen.decoder.config.vocabSize
    var s = GenerationSettings()
    s.sampling = .greedy
    s.maxNewTokens = newTokens
    s.stopAtEnd = false
    var rng = SplitMix64(seed: 7)
    var ttft: [Double] = [], rates: [Double] = []
    for r in 0..<(repeats + 1) {
      let prompt = (0..<promptTokens).map { _ in Int32(rng.next() % UInt64(V)) }
      let (_, t) = try gen.generate([prompt], s)
      if r == 0 { continue }  // warm-up
      ttft.append(t.prefillSeconds * 1000)
      rates.append(t.decodeTokensPerSecond)
    }
    let rss = peakRSSMiB()  // before the triad's arrays
    let triad = triadGBps()
    return Result(preset: preset, parameters: gen.decoder.layout.count, promptTokens: promptTokens, newTokens: newTokens,
                  timeToFirstTokenMs: median(ttft), decodeTokensPerSecond: median(rates), weightBytesPerToken: gen.decoder.weightBytesPerToken,
                  triadGBps: triad, peakRSSMiB: rss)
  }
}
