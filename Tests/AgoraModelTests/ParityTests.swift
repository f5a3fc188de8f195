@testable import AgoraModel
import AgoraTestSupport
import Foundation
import Testing

/// Cross-checks against independent implementations in Python (PyTorch + transformers, Hugging Face
/// tokenizers). They need the environment `scripts/setup --python` makes; `scripts/test` sets
/// AGORA_PYTHON to it. Without it they fail and say how to get it.
@Suite(.serialized) struct ParityTests {
  func python() throws -> String {
    let p = ProcessInfo.processInfo.environment["AGORA_PYTHON"] ?? repoRoot + "/.venv/bin/python"
    guard FileManager.default.isExecutableFile(atPath: p) else {
      throw ModelError.file(path: p, problem: "no Python for the cross-checks: run scripts/setup --python (or set AGORA_PYTHON)")
    }
    return p
  }

  /// Runs a command; returns (status, combined output).
  func run(_ exe: String, _ args: [String]) throws -> (Int32, String) { try runProcess(exe, args) }

  @Test(arguments: [("tiny", 4, 64), ("small", 2, 128), ("llama-tiny", 4, 64), ("llama-small", 2, 128)])
  func trainerMatchesPyTorch(preset: String, batch: Int, T: Int) throws {
    let dir = NSTemporaryDirectory() + "agora-parity-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try ReferenceDump.write(config: try GPTConfig.preset(preset), batch: batch, sequence: T, to: dir)
    let (status, out) = try run(try python(), [repoRoot + "/scripts/parity.py", dir])
    print(out.split(separator: "\n").suffix(3).joined(separator: "\n"))
    #expect(status == 0, "scripts/parity.py failed:\n\(out)")
    #expect(out.contains("parity OK"))
  }

  @Test func tokenizerMatchesHuggingFaceTokenizers() throws {
    // Learn a vocabulary from the demo corpus, then compare ids on every language's validation text.
    let data = try demoSlice(languages: ["cs", "da", "de", "el", "es", "fi", "fr", "hu", "it", "nl", "pl", "pt", "ro", "sv"], bytes: 150_000)
    defer { try? FileManager.default.removeItem(atPath: data) }
    var bpe = BPETrainer()
    let langs = try FileManager.default.contentsOfDirectory(atPath: data).sorted()
    for l in langs { bpe.addLanguage(l, texts: [try String(contentsOfFile: "\(data)/\(l)/train.txt", encoding: .utf8)]) }
    let tok = try bpe.train(vocabSize: 4096)
    try tok.save(to: data + "/tokenizer.json")
    let agora = repoRoot + "/.build/release/agora"
    guard FileManager.default.isExecutableFile(atPath: agora) else {
      throw ModelError.file(path: agora, problem: "build the CLI first (scripts/setup does)")
    }
    let files = langs.map { "\(data)/\($0)/valid.txt" }
    let (status, out) = try run(try python(), [repoRoot + "/scripts/tokenizer_parity.py", agora, data + "/tokenizer.json"] + files)
    print(out.split(separator: "\n").suffix(2).joined(separator: "\n"))
    #expect(status == 0, "scripts/tokenizer_parity.py failed:\n\(out)")
    #expect(out.contains("\(files.count + 1) of \(files.count + 1) files identical"))
  }
}
