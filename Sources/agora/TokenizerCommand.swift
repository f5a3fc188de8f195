import AgoraWire
import AgoraData
import AgoraModel
import ArgumentParser
import Foundation

struct TokenizerCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tokenizer", abstract: "Train and use byte-level BPE tokenizers.",
    subcommands: [TrainTokenizer.self, Encode.self])

  struct TrainTokenizer: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "train", abstract: "Learn a byte-level BPE vocabulary, balanced across languages.")

    @Option(help: "Vocabulary size, including the 256 bytes and <|endoftext|>.")
    var vocab: Int = 8192

    @Option(parsing: .upToNextOption, help: "Data directories (a language directory with train.txt, or a directory of them).")
    var input: [String]

    @Option(help: "Where to write tokenizer.json.")
    var out: String = "tokenizer.json"

    @Option(help: "At most this many bytes of each language's train.txt are learned from.")
    var maxBytesPerLanguage: Int = 4_000_000

    func validate() throws {
      guard vocab >= 257, vocab <= 65536 else { throw ValidationError("--vocab must be in 257...65536") }
      guard !input.isEmpty else { throw ValidationError("give at least one --input directory") }
    }

    func run() throws {
      let sources = try LanguageSource.discover(input)
      var trainer = BPETrainer()
      var texts: [String: String] = [:]
      for s in sources {
        guard let h = FileHandle(forReadingAtPath: s.train) else { throw CLIError("\(s.train): cannot open") }
        let d = h.readData(ofLength: maxBytesPerLanguage)
        try? h.close()
        // Cut at the last newline so no character is split.
        let cut = d.lastIndex(of: 0x0A).map { d.prefix(upTo: $0 + 1) } ?? d
        let text = String(decoding: cut, as: UTF8.self)
        texts[s.name] = text
        trainer.addLanguage(s.name, texts: [text])
      }
      let t0 = Date()
      let tok = try trainer.train(vocabSize: vocab) { done, total in
        if done % 500 == 0 || done == total { FileHandle.standardError.write("\r  merges \(done)/\(total)".data(using: .utf8)!) }
      }
      FileHandle.standardError.write("\n".data(using: .utf8)!)
      try tok.save(to: out)
      print("learned \(tok.merges.count) merges from \(trainer.report.uniqueWords) distinct words in \(String(format: "%.1f", Date().timeIntervalSince(t0))) s; wrote \(out)")
      print("tokens per byte (on the text learned from):")
      for s in sources {
        let text = texts[s.name]!
        let n = tok.encode(text).count
        print("  \(s.name): \(String(format: "%.4f", Double(n) / Double(max(1, text.utf8.count))))")
      }
    }
  }

  struct Encode: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Encode files and print their ids as JSON ({file: [ids]}), for cross-checks.")

    @Option(help: "tokenizer.json to use.")
    var tokenizer: String

    @Argument(help: "Text files to encode.")
    var files: [String]

    func run() throws {
      let tok = try Tokenizer(contentsOf: tokenizer)
      var parts: [String] = []
      for f in files {
        guard let d = FileManager.default.contents(atPath: f) else { throw CLIError("\(f): cannot read") }
        let ids = tok.encode(String(decoding: d, as: UTF8.self))
        parts.append("\(jsonString(f)):[\(ids.map(String.init).joined(separator: ","))]")
      }
      print("{" + parts.joined(separator: ",") + "}")
    }
  }
}
