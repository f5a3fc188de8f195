import AgoraWire
import AgoraData
import AgoraStorage
import AgoraModel
import ArgumentParser
import Foundation

struct TokenizerCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tokenizer", abstract: "Train and use byte-level BPE tokenizers.",
    subcommands: [TrainTokenizer.self, CountPreTokens.self, LearnFromCounts.self, Report.self, Encode.self])

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

    @Option(help: "How languages weigh: bytes (equal octets), temperature:T, temperature-characters:T, equalize[:ROUNDS:STRENGTH].")
    var balance: String = "bytes"

    func validate() throws {
      guard vocab >= 257, vocab <= 65536 else { throw ValidationError("--vocab must be in 257...65536") }
      guard !input.isEmpty else { throw ValidationError("give at least one --input directory") }
    }

    func run() throws {
      let sources = try LanguageSource.discover(input)
      let balance = try BPETrainer.Balance(parsing: balance)
      var trainer = BPETrainer()
      var texts: [String: String] = [:]
      for s in sources {
        let text = try LanguageText.read(s.train, maxBytes: maxBytesPerLanguage)
        texts[s.name] = text
        trainer.addLanguage(s.name, texts: [text])
      }
      let t0 = Date()
      let tok = try trainer.train(vocabSize: vocab, balance: balance) { done, total in
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

  struct CountPreTokens: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "count",
      abstract: "Count a node's pre-tokens per language (what a node sends in the vocabulary phase instead of its text).")

    @Option(parsing: .upToNextOption, help: "Data directories (a language directory with train.txt, or a directory of them).")
    var input: [String]
    @Option(help: "Directory for the tables (<language>.agvc).")
    var out: String
    @Option(help: "At most this many bytes of each language's train.txt are counted.")
    var maxBytesPerLanguage: Int = 4_000_000
    @Option(help: "Drop pre-tokens seen fewer times than this (k).")
    var minCount: UInt64 = 1
    @Option(help: "Drop pre-tokens seen in fewer documents than this (m).")
    var minDocuments: UInt32 = 1
    @Option(help: "Standard deviation of Gaussian noise added to each count before the thresholds (0: none).")
    var noise: Double = 0
    @Option(help: "Also count the held-back pre-tokens in pieces of this many characters, thresholded in turn (0: none; a federation's default).")
    var fragmentLength: Int = 3

    func run() throws {
      try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
      for s in try LanguageSource.discover(input) {
        let texts = [try LanguageText.read(s.train, maxBytes: maxBytesPerLanguage)]
        let counts = PreTokenCounts.count(language: s.name, texts: texts)
        let (kept, f, pf) = counts.thresholded(texts: texts, fragmentLength: fragmentLength, minCount: minCount, minDocuments: minDocuments, noise: noise)
        let bytes = kept.encoded()
        try AtomicFile.write(Data(bytes), to: out + "/\(s.name).agvc")
        print("\(s.name): \(f.kept) pre-tokens kept, \(f.dropped) dropped (\(f.droppedOccurrences) of \(f.keptOccurrences + f.droppedOccurrences) occurrences)\(fragmentLength > 0 && f.dropped > 0 ? "; \(pf.kept) pieces sent, \(pf.dropped) held back" : ""); \(bytes.count) bytes")
      }
    }
  }

  struct LearnFromCounts: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "learn", abstract: "Learn a BPE vocabulary from count tables (several nodes' tables of a language are added).")

    @Argument(help: "Count tables (.agvc) or directories of them.")
    var tables: [String]
    @Option(help: "Vocabulary size, including the 256 bytes and <|endoftext|>.")
    var vocab: Int = 8192
    @Option(help: "How languages weigh: bytes, temperature:T, temperature-characters:T, equalize[:ROUNDS:STRENGTH].")
    var balance: String = "bytes"
    @Option(help: "Where to write tokenizer.json.")
    var out: String = "tokenizer.json"

    func run() throws {
      let merged = try VocabularyTables.merge(try VocabularyTables.load(tables))
      var trainer = BPETrainer()
      for t in merged { trainer.add(t) }
      let t0 = Date()
      let tok = try trainer.train(vocabSize: vocab, balance: try BPETrainer.Balance(parsing: balance))
      try tok.save(to: out)
      print("learned \(tok.merges.count) merges from \(merged.count) languages' tables (\(trainer.report.uniqueWords) distinct pre-tokens) in \(String(format: "%.1f", Date().timeIntervalSince(t0))) s; wrote \(out)")
    }
  }

  struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "How fairly a tokenizer serves languages: tokens per byte and per character on each language's text, and the premium on parallel text (gettext catalogues) relative to the median language.")

    @Option(help: "tokenizer.json to report on.")
    var tokenizer: String
    @Argument(help: "Data directories (a language directory with valid.txt or train.txt, or a directory of them).")
    var input: [String]
    @Option(help: "Where the gettext catalogues are (parallel text); empty: none.")
    var locales: String = "/usr/share/locale"
    @Option(help: "At most this many bytes of each language's text are measured.")
    var maxBytesPerLanguage: Int = 1_000_000
    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
      let tok = try Tokenizer(contentsOf: tokenizer)
      let sources = try LanguageSource.discover(input)
      let texts = try sources.map { ($0.name, try LanguageText.read($0.valid ?? $0.train, maxBytes: maxBytesPerLanguage)) }
      let parallel = locales.isEmpty ? [:] : try ParallelText.fromMessageCatalogues(root: locales, languages: sources.map(\.name))
      let r = TokenizerFairness(tokenizer: tok, texts: texts, parallel: parallel)
      if json {
        let rows = r.languages.map { l in
          "{\"language\":\(jsonString(l.name)),\"tokens_per_byte\":\(l.tokensPerByte),\"tokens_per_character\":\(l.tokensPerCharacter),\"premium\":\(l.premium.map { "\($0)" } ?? "null")}"
        }
        print("{\"tokenizer\":\(jsonString(tokenizer)),\"parallel_sentences\":\(r.parallelSentences),\"mean_tokens_per_byte\":\(r.meanTokensPerByte),\"premium_spread\":\(r.premiumSpread.map { "\($0)" } ?? "null"),\"languages\":[\(rows.joined(separator: ","))]}")
        return
      }
      print("\(tokenizer): \(tok.vocabSize) tokens; parallel text: \(r.parallelSentences) sentences from gettext catalogues\(parallel.isEmpty ? " (none found)" : "")")
      print("language  tokens/byte  tokens/char  premium")
      for l in r.languages {
        print(String(format: "%-8@  %11.4f  %11.4f  %@", l.name as NSString, l.tokensPerByte, l.tokensPerCharacter, l.premium.map { String(format: "%7.3f", $0) } ?? "      —"))
      }
      print(String(format: "mean tokens/byte %.4f; worst/best premium %@", r.meanTokensPerByte, r.premiumSpread.map { String(format: "%.3f", $0) } ?? "—"))
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
