import AgoraModel
import AgoraTensor
import AgoraTestSupport
import AgoraFineTune
import Foundation
import Testing

/// `agora finetune` and `agora generate --chat` as a user runs them (issue #34): LoRA on chat data with a line
/// that cannot be trained on, answer bits/byte that fall, a merged model and a peft adapter that transformers
/// and peft load to the same logits, and chat generation from either giving the same tokens.
@Suite(.serialized) struct FineTuneCommandTests {
  let agora = repoRoot + "/.build/release/agora"
  static let python = ProcessInfo.processInfo.environment["AGORA_PYTHON"] ?? repoRoot + "/.venv/bin/python"

  /// A random GPT-2 `tiny` model with Agora's own tokenizer, and a task in chat form: "repeat W" → "W W W" for 30
  /// words (validation asks about ten of them: a random base learns the answers, not yet the copying).
  func setUp(_ root: String) throws -> (base: String, data: String) {
    var merges: [(Int32, Int32)] = []
    for a in Array("etaoinsrhl".utf8) { for b in Array("etaoinsrhl ".utf8) { merges.append((Int32(a), Int32(b))) } }
    let tok = try Tokenizer(merges: merges)
    var c = try GPTConfig.preset("tiny")
    c.vocabSize = tok.vocabSize
    let p = FloatBuffer(count: ParameterLayout(c).count)
    GPT.initialise(p, layout: ParameterLayout(c), seed: 9)
    try Checkpoint.save(parameters: p, config: c, tokenizer: tok, to: root + "/base")
    var rng = SplitMix64(seed: 5)
    let words = (0..<40).map { _ in String((0..<(2 + Int(rng.next() % 4))).map { _ in Array("etaoinsrhl")[Int(rng.next() % 10)] }) }
    func line(_ w: String) -> String {
      #"{"messages": [{"role": "user", "content": "repeat \#(w)"}, {"role": "assistant", "content": "\#(w) \#(w) \#(w)"}]}"#
    }
    try FileManager.default.createDirectory(atPath: root + "/chat/xx", withIntermediateDirectories: true)
    var train = (0..<300).map { _ in line(words[Int(rng.next() % 30)]) }
    train.insert(#"{"messages": [{"role": "robot", "content": "x"}]}"#, at: 7)  // line 8: unknown role
    try (train.joined(separator: "\n") + "\n").write(toFile: root + "/chat/xx/train.jsonl", atomically: true, encoding: .utf8)
    try ((0..<10).map { line(words[$0]) }.joined(separator: "\n") + "\n").write(toFile: root + "/chat/xx/valid.jsonl", atomically: true, encoding: .utf8)
    return (root + "/base", root + "/chat")
  }

  func figure(_ out: String, _ label: String) -> Double? {
    guard let l = out.split(separator: "\n").first(where: { $0.hasPrefix("\(label) xx:") }) else { return nil }
    return Double(l.split(separator: " ")[2])
  }

  @Test func loraFineTuneExportsWhatPeftLoadsAndChatsFromEither() throws {
    let root = NSTemporaryDirectory() + "agora-finetune-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: root) }
    let (base, data) = try setUp(root)
    let out = root + "/out"
    let (status, log) = try runProcess(agora, ["finetune", "--base", base, "--data", data, "--steps", "150", "--batch", "4", "--sequence", "64",
                                               "--lr", "1e-2", "--rank", "8", "--alpha", "16", "--out", out])
    #expect(status == 0, "\(log)")
    #expect(log.contains("line 8 unknown role"), "the refused line is reported by number: \(log)")
    #expect(log.contains("chatml's tokens added to the vocabulary"))
    let before = try #require(figure(log, "before"), "\(log)"), after = try #require(figure(log, "after"), "\(log)")
    #expect(after < 0.9 * before, "answer bits/byte \(before) → \(after)")
    let fm = FileManager.default
    for f in ["merged/config.json", "merged/model.safetensors", "merged/tokenizer.json", "merged/tokenizer_config.json", "merged/generation_config.json",
              "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "finetune_state.json"] {
      #expect(fm.fileExists(atPath: out + "/" + f), "\(f) written")
    }
    #expect(try ChatTemplate.read(configAt: out + "/merged/tokenizer_config.json") == .chatml)

    // peft loads the adapter onto the base (grown for the template's tokens); its logits equal the merged model's.
    let tok = try Tokenizer(contentsOf: out + "/merged/tokenizer.json")
    let ids = try tok.render([ChatMessage(.user, "repeat tessa")], template: .chatml, addGenerationPrompt: true).ids
    let check = try peftLogits(python: Self.python, base: base, adapter: out + "/adapter", merged: out + "/merged", tokens: ids, scratch: root)
    let diff = try #require(check.peftVsMerged, "\(check.output)"), effect = try #require(check.adapterEffect, "\(check.output)")
    #expect(diff <= 1e-4, "peft-loaded vs merged logits differ by \(diff)")
    #expect(effect > 1e-2, "the adapter changes the logits (\(effect))")

    // Chat generation: the merged model and base + adapter give the same greedy tokens, ending at the turn's end.
    let args = ["--chat", "--prompt", "repeat tessa", "--temperature", "0", "--max-new-tokens", "24", "--json"]
    let (g1, merged) = try runProcess(agora, ["generate", "--model", out + "/merged"] + args)
    let (g2, adapted) = try runProcess(agora, ["generate", "--model", base, "--adapter", out + "/adapter", "--template", "chatml"] + args)
    #expect(g1 == 0 && g2 == 0, "\(merged)\n\(adapted)")
    func tokens(_ s: String) -> [Int]? {
      (s.split(separator: "\n").last { $0.hasPrefix("{") }).flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }?["tokens"] as? [Int]
    }
    #expect(tokens(merged) != nil && tokens(merged) == tokens(adapted), "\(merged)\n\(adapted)")

    // Refusals that say what to give.
    let (s3, e3) = try runProcess(agora, ["generate", "--model", base, "--chat", "--prompt", "hi"])
    #expect(s3 != 0 && e3.contains("--template"), "\(e3)")
    let (s4, e4) = try runProcess(agora, ["generate", "--model", base, "--adapter", out + "/adapter", "--prompt", "hi"])
    #expect(s4 != 0 && e4.contains("--chat"), "an adapter with new tokens needs the template: \(e4)")
    let (s5, e5) = try runProcess(agora, ["finetune", "--base", base, "--data", root + "/none", "--out", root + "/x"])
    #expect(s5 != 0 && e5.contains("not a directory"), "\(e5)")
  }
}
