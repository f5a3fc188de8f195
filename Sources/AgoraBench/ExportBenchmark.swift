import AgoraImport
import AgoraModel
import AgoraTensor
import Foundation

/// A large model out and back (issue 37: a 1B-parameter version exported as sharded safetensors above 2 GB and
/// imported back by the pilot-model import): parameters of the preset's shape (deterministic pseudo-random values,
/// nothing is trained), `Checkpoint.save` with shards of at most `shardBytes`, then `HuggingFaceImport.read` of the
/// directory, every parameter compared bit for bit. Reports seconds each way and this process's peak memory.
public struct ExportBenchmark {
  public var preset = "llama-1b"
  public var shardBytes = Checkpoint.defaultShardBytes
  public var keep = false
  public init() {}

  public func run() throws -> String {
    var c = try GPTConfig.preset(preset)
    let dir = NSTemporaryDirectory() + "agora-benchexport-\(UUID().uuidString)"
    defer { if !keep { try? FileManager.default.removeItem(atPath: dir) } }
    // A tokenizer of the preset's vocabulary: byte pairs as merges (only its size matters here).
    var merges: [(Int32, Int32)] = []
    var seen = Set<Int64>()
    var a: Int32 = 0, b: Int32 = 0
    while merges.count + 257 < c.vocabSize {
      b += 1; if b == 256 { a += 1; b = 0 }
      if seen.insert(Int64(a) << 32 | Int64(b)).inserted { merges.append((a, b)) }
    }
    let tokenizer = try Tokenizer(merges: merges)
    c.vocabSize = tokenizer.vocabSize
    let count = ParameterLayout(c).count
    let params = FloatBuffer(count: count)
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    for i in 0..<count {
      state ^= state << 13; state ^= state >> 7; state ^= state << 17
      params[i] = Float(Int64(bitPattern: state) >> 40) * (0.02 / Float(1 << 23))
    }
    let t0 = Date()
    try Checkpoint.save(parameters: params, config: c, tokenizer: tokenizer, to: dir, shardBytes: shardBytes)
    let exportSeconds = Date().timeIntervalSince(t0)
    let files = try FileManager.default.contentsOfDirectory(atPath: dir)
    let shards = files.filter { $0.hasPrefix("model-") && $0.hasSuffix(".safetensors") }.count
    let bytes = try files.filter { $0.hasSuffix(".safetensors") }.reduce(0) { $0 + ((try FileManager.default.attributesOfItem(atPath: dir + "/" + $1)[.size] as? Int) ?? 0) }
    let t1 = Date()
    let back = try HuggingFaceImport.read(dir)
    let importSeconds = Date().timeIntervalSince(t1)
    let equal = back.parameters.count == count && memcmp(back.parameters.pointer, params.pointer, 4 * count) == 0
    return String(format: "{\"preset\":\"%@\",\"parameters\":%d,\"model_gb\":%.3f,\"files_gb\":%.3f,\"shards\":%d,\"max_shard_bytes\":%d,\"export_s\":%.1f,\"import_s\":%.1f,\"equal\":%@,\"peak_mib\":%.0f}",
                  preset, count, Double(4 * count) / 1e9, Double(bytes) / 1e9, shards, shardBytes, exportSeconds, importSeconds, equal ? "true" : "false", peakRSSMiB())
  }
}
