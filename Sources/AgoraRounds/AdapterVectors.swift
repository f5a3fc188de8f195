import AgoraCrypto
import AgoraFineTune
import AgoraModel
import AgoraTensor
import AgoraText
import Foundation

/// Test vectors of an adapter version (Protocol/vectors/adapter.json, SPEC §4 "Adapter versions"): a small
/// LLaMA base, LoRA settings with two trained token rows, the version header and the model hash JOIN carries,
/// a version hash over values anyone can recompute, and the merged weights an exporter writes. `agora protocol
/// vectors` writes the file; a test checks that it is what this code writes.
public enum AdapterVectors {
  /// The base: a LLaMA shape of 8 tokens (6 of the base's own, 2 a chat template added), C 4, one layer.
  public static var config: GPTConfig {
    var c = GPTConfig.llama(vocabSize: 8, contextLength: 8, channels: 4, layers: 1, heads: 2, kvHeads: 1, intermediate: 8)
    c.base = "blake3:" + String(repeating: "ab", count: 32)
    return c
  }
  public static let settings = LoRASettings(rank: 2, alpha: 4, dropout: 0, targets: ["q_proj", "v_proj"], tokens: [6, 7])

  /// Value i of the adapter version: (((i·29) mod 83) − 41) / 500.
  static func value(_ i: Int) -> Float { Float(Double((i * 29) % 83) - 41) / 500 }
  /// Parameter i of the base: (((i·17) mod 71) − 35) / 100.
  static func baseValue(_ i: Int) -> Float { Float(Double((i * 17) % 71) - 35) / 100 }

  public static func json() throws -> String {
    let c = config
    let layout = try LoRALayout(c, settings: settings)
    let header = FederatedModel.adapterHeader(layout, template: .chatml)
    let values = FloatBuffer(count: layout.count)
    for i in 0..<layout.count { values[i] = value(i) }
    let pl = ParameterLayout(c)
    let base = FloatBuffer(count: pl.count)
    for i in 0..<pl.count { base[i] = baseValue(i) }
    let adapters = LoRAAdapters(layout: layout, rows: 1)
    adapters.parameters.copy(from: values)
    let merged = FloatBuffer(count: pl.count)
    merged.copy(from: base)
    adapters.merge(into: merged)
    func floats(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> String { "[" + (0..<n).map { String(format: "%.9g", p[$0]) }.joined(separator: ", ") + "]" }
    let q = pl.llamaBlocks[0].qkv, C = c.channels, hs = C / c.heads
    let jsonLength = header.count - 8
    let headerText = String(decoding: header[8...], as: UTF8.self)
    return """
    {
      "description": "An adapter version of a fine-tuning federation (SPEC §4, Adapter versions): LoRA on a one-layer LLaMA base; values and base parameters from the formulas given.",
      "base": {"architecture": "llama", "vocab_size": \(c.vocabSize), "channels": \(C), "layers": \(c.layers), "heads": \(c.heads), "kv_heads": \(c.kvHeads), "intermediate": \(c.intermediate), "agora_base": "\(c.base!)"},
      "adapter": {"r": \(settings.rank), "alpha": \(Int(settings.alpha)), "dropout": 0, "targets": ["q_proj", "v_proj"], "tokens": [6, 7], "template": "chatml"},
      "header_length": \(jsonLength),
      "header_json": \(jsonString(headerText)),
      "model_hash": "\(hex(Sodium.blake2b(header)))",
      "values": {"count": \(layout.count), "formula": "v[i] = (((i*29) mod 83) - 41) / 500, binary32, layout order"},
      "version_hash": "\(hex(VersionCopy.hash(header: header, parameters: values)))",
      "base_parameters": {"count": \(pl.count), "formula": "p[i] = (((i*17) mod 71) - 35) / 100, binary32, in the base's version-blob order"},
      "merged_q_proj_layer0": \(floats(merged.pointer + q, c.heads * hs * C)),
      "merged_embed_tokens_rows_6_7": \(floats(merged.pointer + pl.wte + 6 * C, 2 * C)),
      "merged_lm_head_rows_6_7": \(floats(merged.pointer + pl.head + 6 * C, 2 * C))
    }

    """
  }
}
