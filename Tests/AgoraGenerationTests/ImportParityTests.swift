import AgoraGeneration
import AgoraImport
@testable import AgoraModel
import AgoraTensor
import AgoraTestSupport
import Foundation
import Testing

/// Hugging Face checkpoints made by transformers inside the test (random initialisation, shapes no preset has,
/// tokenizers whose ids are not Agora's order) imported and run by Agora: the same logits as transformers
/// within 1e-4, by the trainer's forward pass and by the decoder's key/value-cache pass, and the same greedy
/// tokens as `generate(do_sample=False)`. Needs the Python environment (scripts/setup --python).
@Suite(.serialized) struct ImportParityTests {
  static let python: String = ProcessInfo.processInfo.environment["AGORA_PYTHON"] ?? repoRoot + "/.venv/bin/python"
  static let script = repoRoot + "/scripts/hf_model.py"

  /// Runs scripts/hf_model.py; returns its last output line (JSON).
  static func hf(_ args: [String]) throws -> [String: Any] {
    guard FileManager.default.isExecutableFile(atPath: python) else {
      throw ModelError.file(path: python, problem: "no Python for the cross-checks: run scripts/setup --python (or set AGORA_PYTHON)")
    }
    let (status, out) = try runProcess(python, [script] + args)
    guard status == 0, let line = out.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
          let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
      throw ModelError.mismatch("scripts/hf_model.py \(args.joined(separator: " ")) failed (\(status)):\n\(out)")
    }
    return o
  }

  /// A transformers checkpoint of `kind` in a fresh temporary directory.
  static func checkpoint(_ kind: String, _ extra: [String] = []) throws -> (dir: String, cleanup: () -> Void) {
    let root = NSTemporaryDirectory() + "agora-import-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    _ = try hf(["make", kind, root + "/hf"] + extra)
    return (root + "/hf", { try? FileManager.default.removeItem(atPath: root) })
  }

  static let cases: [(String, [String])] = [
    ("gpt2", []),
    ("gpt2", ["--dtype", "f16", "--shards", "3"]),
    ("llama", []),
    ("llama", ["--dtype", "bf16", "--shards", "3", "--tied"]),
  ]

  @Test(arguments: cases.indices)
  func logitsEqualTransformers(_ which: Int) throws {
    let (kind, extra) = Self.cases[which]
    let (dir, cleanup) = try Self.checkpoint(kind, extra)
    defer { cleanup() }
    let out = (dir as NSString).deletingLastPathComponent + "/agora"
    let m = try HuggingFaceImport.run(dir, out: out)
    #expect(m.config.architecture == (kind == "gpt2" ? .gpt2 : .llama))
    #expect(!GPTConfig.presets.values.contains(m.config), "the test's shape must be no preset's")
    #expect(m.base.license == "apache-2.0")
    #expect(m.base.hash == (try HuggingFaceImport.checkpointHash(dir)))
    let tokens: [Int32] = m.tokenizer.encodePrompt("Kalo mi stevé ßa ło, δα ка! 42 zeün pañe")
    #expect(tokens.count >= 12)
    _ = try Self.hf(["logits", out, out + "/reference.safetensors", "--tokens", tokens.map(String.init).joined(separator: ",")])
    let ref = try SafeTensors(path: out + "/reference.safetensors")
    #expect(try ref.int32s("tokens") == tokens)
    let want = try ref.floats("logits", shape: [tokens.count, m.config.vocabSize])

    // The trainer's forward pass on the imported directory.
    let (gpt, _) = try Checkpoint.load(dir: out, batch: 1, sequence: tokens.count)
    try gpt.forward(tokens: tokens, targets: nil)
    var worst: Float = 0
    for i in 0..<want.count { worst = max(worst, abs(gpt.head.logits[i] - want[i])) }
    #expect(worst <= 1e-4, "trainer logits differ from transformers' by \(worst)")

    // The decoder: a prefill of the first half, then one token at a time.
    let dec = try Decoder(config: m.config, parameters: m.parameters, slots: 1, maxRows: 64)
    let half = tokens.count / 2
    var got = try dec.forward((0..<half).map { Decoder.Row(slot: 0, position: $0, token: tokens[$0], wantsLogits: true) })
    for t in half..<tokens.count { got += try dec.forward([Decoder.Row(slot: 0, position: t, token: tokens[t], wantsLogits: true)]) }
    var worstDecoder: Float = 0
    for (t, row) in got.enumerated() { for j in 0..<row.count { worstDecoder = max(worstDecoder, abs(row[j] - want[t * m.config.vocabSize + j])) } }
    #expect(worstDecoder <= 1e-4, "decoder logits differ from transformers' by \(worstDecoder)")
  }
}

/// Greedy decoding against transformers' `generate(do_sample=False)`, token for token, and what generation
/// promises besides: reproducible sampling, batches that give what each prompt gives alone, streaming that adds
/// up to the text, stop strings, the end-of-text token.
@Suite(.serialized) struct GenerationTests {
  @Test(arguments: ["gpt2", "llama"])
  func greedyMatchesTransformersGenerate(_ kind: String) throws {
    let (dir, cleanup) = try ImportParityTests.checkpoint(kind, ["--seed", "3"])
    defer { cleanup() }
    let out = (dir as NSString).deletingLastPathComponent + "/agora"
    try HuggingFaceImport.run(dir, out: out)
    let gen = try Generator(modelDirectory: out)
    for prompt in ["kalo mi", "Stevé ßa ło δα"] {
      let want = try ImportParityTests.hf(["greedy", dir, "--prompt", prompt, "--new", "40"])
      let ids = gen.tokenizer.encodePrompt(prompt)
      #expect(ids.map(Int.init) == want["prompt"] as? [Int], "prompt ids differ from transformers' tokenizer")
      var s = GenerationSettings()
      s.sampling = .greedy
      s.maxNewTokens = 40
      let (done, _) = try gen.generate([ids], s)
      var expected = (want["new"] as? [Int] ?? []).map { Int32($0) }
      if let last = expected.last, gen.endTokens.contains(last) { expected.removeLast() }  // transformers keeps the end token
      #expect(done[0].tokens == expected, "greedy tokens differ (transformers' smallest top-2 margin \(want["margin"] ?? "?"))")
    }
  }

  /// A model of the `llama-tiny` preset with its own byte-level tokenizer (no Python needed).
  static func tinyGenerator(slots: Int = 1) throws -> Generator {
    var merges: [(Int32, Int32)] = []
    for i in 0..<100 { merges.append((Int32(97 + i % 26), Int32(97 + (i * 7) % 26))) }
    var seen = Set<[Int32]>()
    merges = merges.filter { seen.insert([$0.0, $0.1]).inserted }
    let tok = try Tokenizer(merges: merges)
    var c = try GPTConfig.preset("llama-tiny")
    c.vocabSize = tok.vocabSize
    let params = FloatBuffer(count: ParameterLayout(c).count)
    GPT.initialise(params, layout: ParameterLayout(c), seed: 5)
    for i in 0..<params.count { params.pointer[i] *= 20 }  // peaked distributions: a random model that says something
    return try Generator(config: c, parameters: params, tokenizer: tok, slots: slots)
  }

  @Test func samplingIsReproducibleForASeedAndBatchesGiveWhatEachPromptGivesAlone() throws {
    let prompts = ["the cat", "a dog and", "zz"]
    var s = GenerationSettings()
    s.maxNewTokens = 24
    s.sampling.temperature = 1
    s.sampling.topK = 40
    s.sampling.topP = 0.95
    s.sampling.repetitionPenalty = 1.2
    s.sampling.seed = 11
    let alone = try Self.tinyGenerator()
    let a = try alone.generate(texts: [prompts[0]], s).0[0]
    let again = try alone.generate(texts: [prompts[0]], s).0[0]  // the slot now holds this prompt: its prefix is reused
    #expect(a.tokens == again.tokens)
    #expect(a.tokens.count == 24 || a.finishReason == .eos)
    s.sampling.seed = 12
    let other = try alone.generate(texts: [prompts[0]], s).0[0]
    #expect(other.tokens != a.tokens, "another seed, the same 24 sampled tokens")
    s.sampling.seed = 11
    let batch = try Self.tinyGenerator(slots: 3)
    var pieces = ["", "", ""]
    let together = try batch.generate(texts: prompts, s) { i, piece in pieces[i] += piece }.0
    #expect(together[0].tokens == a.tokens, "prompt 0 in a batch of 3 differs from prompt 0 alone")
    for i in 0..<3 {
      #expect(pieces[i] == together[i].text, "streamed pieces do not add up to the text of prompt \(i)")
      // Prompt i in a batch samples from stream i; alone, stream 0: compare with a batch of one at the same index.
    }
  }

  @Test func stopStringsEndTheTextAndNeverStream() throws {
    let gen = try Self.tinyGenerator()
    var s = GenerationSettings()
    s.sampling = .greedy
    s.maxNewTokens = 40
    let free = try gen.generate(texts: ["the cat"], s).0[0]
    #expect(free.text.count >= 4)
    // A stop string taken from the middle of what greedy decoding says.
    let chars = Array(free.text)
    let stop = String(chars[2..<min(chars.count, 4)])
    s.stop = [stop]
    var streamed = ""
    let cut = try gen.generate(texts: ["the cat"], s) { _, p in streamed += p }.0[0]
    #expect(cut.finishReason == .stop)
    #expect(!cut.text.contains(stop))
    #expect(free.text.hasPrefix(cut.text + stop) || free.text.range(of: stop).map { String(free.text[..<$0.lowerBound]) } == cut.text)
    #expect(streamed == cut.text)
  }

  @Test func badSettingsAndPromptsAreRefusedByName() throws {
    let gen = try Self.tinyGenerator()
    var s = GenerationSettings()
    s.sampling.topP = 0
    #expect(throws: GenerationError.badSetting("top-p 0.0 must be in (0, 1]")) { try gen.generate(texts: ["a"], s) }
    s = GenerationSettings()
    #expect(throws: GenerationError.emptyPrompt(0)) { try gen.generate([[]], s) }
    let long = [Int32](repeating: 97, count: gen.decoder.config.contextLength)
    #expect(throws: GenerationError.promptTooLong(prompt: 0, tokens: long.count, context: long.count)) { try gen.generate([long], s) }
    #expect(throws: GenerationError.badToken(99_999, vocabulary: gen.decoder.config.vocabSize)) { try gen.generate([[1, 99_999]], s) }
    // A full context ends the completion instead of failing.
    s.sampling = .greedy
    s.maxNewTokens = 1000
    let done = try gen.generate([Array(long.prefix(long.count - 3))], s).0[0]
    #expect(done.finishReason == .context || done.finishReason == .eos)
    #expect(done.tokens.count <= 3)
  }
}
