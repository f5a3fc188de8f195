@testable import AgoraRounds
import AgoraCrypto
import AgoraFineTune
import AgoraModel
import AgoraTensor
import AgoraTestSupport
import AgoraWire
import Foundation
import Testing

/// `[finetune]` of federation.toml (issue #34): what it needs and refuses, the version header that binds an
/// adapter to its base and settings (so JOIN's model hash differs when either does), and the adapter vector.
@Suite struct FineTuneTermsTests {
  /// A federation file with `model.init` naming a small LLaMA base written by Agora, and `finetune`'s lines.
  func federation(_ finetune: String, extra: String = "", rounds: String = "") throws -> (dir: String, path: String) {
    let dir = try temporaryDirectory("agora-ftterms")
    let tok = try Tokenizer(merges: [])
    var c = try GPTConfig.preset("llama-tiny")
    c.vocabSize = tok.vocabSize
    let p = FloatBuffer(count: ParameterLayout(c).count)
    GPT.initialise(p, layout: ParameterLayout(c), seed: 4)
    try Checkpoint.save(parameters: p, config: c, tokenizer: tok, to: dir + "/base")
    try """
      [federation]
      id = "f"
      endpoint = "tcp://127.0.0.1:5555"
      coordinator_card = "card.toml"
      [model]
      init = "base"
      \(extra)
      [rounds]
      count = 3
      \(rounds)
      [finetune]
      \(finetune)
      """.write(toFile: dir + "/federation.toml", atomically: true, encoding: .utf8)
    return (dir, dir + "/federation.toml")
  }

  func refusal(_ body: () throws -> Void) -> ConfigError? {
    do { try body(); return nil } catch let e as ConfigError { return e } catch { Issue.record("not a ConfigError: \(error)"); return nil }
  }

  @Test func theRecommendedAdapterIsTheAttentionProjectionsAndAHundredthOfTheModel() throws {
    let (dir, path) = try federation("method = \"lora\"")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let fed = try FederationConfig(path: path)
    let ft = try #require(fed.fineTune)
    #expect(ft.lora?.targets == ["q_proj", "k_proj", "v_proj", "o_proj"] && ft.lora?.rank == 16 && ft.template == .chatml)
    #expect(fed.embeddingRows == .tokens, "adapters have no embedding rows to weigh by counts")
    let fm = try fed.federatedModel(tokenizer: try Tokenizer(contentsOf: fed.tokenizer))
    // ChatML's two tokens join the vocabulary, and their rows train with the adapters.
    #expect(fm.newTokens == [257, 258] && fm.config.vocabSize == 259 && fm.lora?.settings.tokens == [257, 258])
    #expect(fm.count == fm.lora?.count && fm.count < ParameterLayout(fm.config).count)
    let header = String(decoding: fm.header.dropFirst(8), as: UTF8.self)
    #expect(header.contains("\"agora.base\":\"blake3:") && header.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"), "\(header)")
    // Version 0 is the base: B = 0, and the token rows as the (grown) base has them.
    let base = try #require(try fed.fineTuneBase()?.base)
    let zero = try fed.fineTuneVersionZero(fm, base: base)
    #expect(zero.count == fm.count)
    let l = try #require(fm.lora)
    for m in l.modules { for i in 0..<(m.outFeatures * l.settings.rank) { #expect(zero[m.b + i] == 0) } }
  }

  @Test func theModelHashBindsTheBaseAndTheAdapterSettings() throws {
    func hash(_ ft: String) throws -> [UInt8] {
      let (dir, path) = try federation(ft)
      defer { try? FileManager.default.removeItem(atPath: dir) }
      let fed = try FederationConfig(path: path)
      return try fed.terms(try fed.federatedModel(tokenizer: try Tokenizer(contentsOf: fed.tokenizer))).modelHash
    }
    let a = try hash("rank = 8"), b = try hash("rank = 4"), c = try hash("rank = 8\ntargets = [\"q_proj\", \"v_proj\"]")
    let d = try hash("rank = 8\ntemplate = \"llama3\""), e = try hash("method = \"full\"")
    #expect(Set([a, b, c, d, e].map(hex)).count == 5, "each setting changes what JOIN's model hash pins")
    // The same settings in another order of the targets are the same adapter.
    #expect(try hash("rank = 8\ntargets = [\"v_proj\", \"q_proj\"]") == c)
  }

  @Test func whatAFineTuningFederationCannotHaveIsRefusedByKey() throws {
    let cases: [(String, String, String, String)] = [
      ("rank = 0", "", "", "finetune.rank"),
      ("targets = [\"c_attn\"]", "", "", "finetune.targets"),
      ("method = \"full\"\nrank = 8", "", "", "finetune.rank"),
      ("template = \"vicuna\"", "", "", "finetune.template"),
      ("method = \"lora\"", "", "embedding_rows = \"token_counts\"", "rounds.embedding_rows"),
      ("method = \"lora\"", "", "restricted_softmax = true", "rounds.restricted_softmax"),
    ]
    for (ft, extra, rounds, key) in cases {
      let (dir, path) = try federation(ft, extra: extra, rounds: rounds)
      defer { try? FileManager.default.removeItem(atPath: dir) }
      let e = try #require(refusal { _ = try FederationConfig(path: path) }, "\(ft) \(rounds)")
      #expect(e.key == key, "\(ft) \(rounds): \(e)")
    }
    // Without a base there is nothing to fine-tune.
    let dir = try temporaryDirectory("agora-ftterms")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try "[federation]\nid = \"f\"\nendpoint = \"tcp://127.0.0.1:5555\"\ncoordinator_card = \"c.toml\"\n[model]\ntokenizer = \"t.json\"\n[finetune]\nrank = 8\n"
      .write(toFile: dir + "/federation.toml", atomically: true, encoding: .utf8)
    let e = try #require(refusal { _ = try FederationConfig(path: dir + "/federation.toml") })
    #expect(e.key == "model.init" && e.description.contains("starts from a base model"), "\(e)")
  }

  /// Protocol/vectors/adapter.json is what the code writes (`agora protocol vectors`), and its merged weights are
  /// what the SPEC's rule gives, recomputed here without the adapters' code: W + (α/r)·B·A, token rows replaced.
  @Test func theAdapterVectorIsWhatTheCodeWritesAndTheMergeRuleGives() throws {
    let text = try String(contentsOfFile: repoRoot + "/Protocol/vectors/adapter.json", encoding: .utf8)
    #expect(text == (try AdapterVectors.json()))
    let o = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    let c = AdapterVectors.config, s = AdapterVectors.settings
    let layout = try LoRALayout(c, settings: s)
    let q = try #require(layout.module(.q, layer: 0))
    let pl = ParameterLayout(c)
    let C = c.channels, out = q.outFeatures, r = s.rank
    var want = [Double]()
    for i in 0..<out {
      for j in 0..<C {
        var acc = 0.0
        for k in 0..<r { acc += Double(AdapterVectors.value(q.b + i * r + k)) * Double(AdapterVectors.value(q.a + k * C + j)) }
        want.append(Double(AdapterVectors.baseValue(pl.llamaBlocks[0].qkv + i * C + j)) + Double(s.alpha) / Double(r) * acc)
      }
    }
    let got = try #require(o["merged_q_proj_layer0"] as? [Double])
    #expect(got.count == want.count)
    for (g, w) in zip(got, want) { #expect(abs(g - w) <= 1e-6 * max(1, abs(w)), "\(g) vs \(w)") }
    // The token rows are the adapter's: they replace the base's rows 6 and 7.
    let rows = try #require(o["merged_embed_tokens_rows_6_7"] as? [Double])
    for (i, g) in rows.enumerated() { #expect(Float(g) == AdapterVectors.value(layout.embeddingRows + i)) }
    let header = try #require(o["header_json"] as? String)
    var len = UInt64(header.utf8.count).littleEndian
    let bytes = withUnsafeBytes(of: &len) { Array($0) } + Array(header.utf8)
    #expect(hex(Sodium.blake2b(bytes)) == o["model_hash"] as? String)
  }
}
