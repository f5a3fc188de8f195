import AgoraModel
import AgoraTensor
import AgoraTestSupport
import Foundation
import Testing

/// `agora generate` as a user runs it: streaming to the terminal, `--json`, a file of prompts in batches, stop
/// strings, seeds, and refusals that say what to give.
@Suite struct GenerateCommandTests {
  let agora = repoRoot + "/.build/release/agora"

  /// A small LLaMA model directory with Agora's own tokenizer (weights scaled up so it says something).
  func model() throws -> String {
    let dir = NSTemporaryDirectory() + "agora-generate-\(UUID().uuidString)"
    var merges: [(Int32, Int32)] = []
    for a in Array("etaoinsrhl".utf8) { for b in Array("etaoinsrhl ".utf8) { merges.append((Int32(a), Int32(b))) } }
    let tok = try Tokenizer(merges: merges)
    var c = try GPTConfig.preset("llama-tiny")
    c.vocabSize = tok.vocabSize
    let p = FloatBuffer(count: ParameterLayout(c).count)
    GPT.initialise(p, layout: ParameterLayout(c), seed: 9)
    for i in 0..<p.count { p.pointer[i] *= 15 }
    try Checkpoint.save(parameters: p, config: c, tokenizer: tok, to: dir)
    return dir
  }

  func json(_ s: String) -> [String: Any]? {
    guard let line = s.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else { return nil }
    return try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
  }

  @Test func streamsJSONBatchesSeedsAndStops() throws {
    let dir = try model()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    // Streaming: the prompt, then the text, on stdout.
    let (s1, out1) = try runProcess(agora, ["generate", "--model", dir, "--prompt", "the rain", "--max-new-tokens", "20", "--seed", "4"])
    #expect(s1 == 0 && out1.hasPrefix("the rain") && out1.count > "the rain".count, "\(out1)")
    // --json: the same seed gives the same tokens; the object has every field the reference names.
    let (s2, out2) = try runProcess(agora, ["generate", "--model", dir, "--prompt", "the rain", "--max-new-tokens", "20", "--seed", "4", "--json"])
    let o = try #require(json(out2), "\(out2)")
    #expect(s2 == 0)
    for k in ["tokens", "text", "finish_reason", "prefill_ms", "decode_tokens_per_s", "peak_rss_mib"] { #expect(o[k] != nil, "--json has \(k)") }
    #expect("the rain" + (o["text"] as? String ?? "") == out1.trimmingCharacters(in: .newlines), "streamed text equals --json's")
    // Greedy with a stop string taken from the greedy text ends before it.
    let (_, g) = try runProcess(agora, ["generate", "--model", dir, "--prompt", "the rain", "--temperature", "0", "--max-new-tokens", "30", "--json"])
    let greedy = try #require(json(g)?["text"] as? String)
    // Two ASCII letters of it (a random model also emits octets that are not whole UTF-8).
    let chars = Array(greedy)
    let at = try #require(chars.indices.dropLast().dropFirst().first { chars[$0].isASCII && chars[$0].isLetter && chars[$0 + 1].isASCII && chars[$0 + 1].isLetter }, "\(greedy)")
    let stop = String(chars[at...(at + 1)])
    let (_, st) = try runProcess(agora, ["generate", "--model", dir, "--prompt", "the rain", "--temperature", "0", "--max-new-tokens", "30", "--stop", stop, "--json"])
    let stopped = try #require(json(st))
    #expect(stopped["finish_reason"] as? String == "stop" && !(stopped["text"] as? String ?? stop).contains(stop), "\(st)")
    // A file of prompts (raw lines and JSON lines), in batches of two.
    let prompts = dir + "/prompts.txt"
    try "the rain\n\"a second one\"\n{\"prompt\": \"the third\"}\n".write(toFile: prompts, atomically: true, encoding: .utf8)
    let (s3, out3) = try runProcess(agora, ["generate", "--model", dir, "--prompts", prompts, "--batch", "2", "--max-new-tokens", "20", "--seed", "4", "--json"])
    let list = try #require(json(out3)?["completions"] as? [[String: Any]], "\(out3)")
    #expect(s3 == 0 && list.count == 3)
    #expect(list[0]["tokens"] as? [Int] == o["tokens"] as? [Int], "prompt 0 in a batch samples as it does alone")
  }

  @Test func refusalsSayWhatToGive() throws {
    let dir = try model()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let cases: [([String], String)] = [
      (["generate", "--model", dir], "give --prompt TEXT or --prompts FILE"),
      (["generate", "--model", dir, "--version", "1", "--prompt", "a"], "not both"),
      (["generate", "--model", dir, "--prompt", "a", "--top-p", "0"], "top-p"),
      (["generate", "--model", dir + "/nope", "--prompt", "a"], "nope"),
      (["generate", "--prompts", dir + "/missing.txt", "--model", dir], "cannot read the prompts file"),
    ]
    for (args, says) in cases {
      let (status, out) = try runProcess(agora, args)
      #expect(status != 0 && out.contains(says), "agora \(args.joined(separator: " ")): \(out)")
    }
  }
}
