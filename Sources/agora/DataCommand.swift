import AgoraData
import ArgumentParser
import Foundation

struct DataCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "data", abstract: "Build and inspect training text.", subcommands: [BuildDemo.self, BuildDemoChat.self])

  struct BuildDemo: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "build-demo",
      abstract: "Build the embedded demo corpus (14 EU languages) from Debian's translated manual pages and installation guide.")

    @Option(help: "Output directory (one subdirectory per language).")
    var out: String = defaultDemoData

    @Option(help: "Output directory of the public corpus for compute donors (default: OUT-public).")
    var publicOut: String?

    @Option(help: "Comma-separated language codes (default: all 14).")
    var languages: String?

    func run() throws {
      let langs = languages?.split(separator: ",").map(String.init)
      let pub = publicOut ?? (out.hasSuffix("/") ? String(out.dropLast()) : out) + "-public"
      let summary = try DemoCorpus.build(out: out, publicOut: pub, languages: langs)
      for s in summary {
        print("\(s.lang): \(s.pages) manual pages, \(s.guidePages) installation-guide pages, train \(s.trainBytes) bytes, valid \(s.validBytes) bytes, public \(s.publicBytes) bytes")
      }
      print("demo corpus written to \(out), its public part to \(pub)")
    }
  }

  struct BuildDemoChat: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "build-demo-chat",
      abstract: "Build the demo's instruction set (JSONL conversations, 14 EU languages) from Debian's translated manual pages.",
      discussion: "Questions about commands' options and purposes, answered by the pages' own text; a tenth of the commands held out for valid.jsonl.")

    @Option(help: "Output directory (one subdirectory per language with train.jsonl and valid.jsonl).")
    var out: String = defaultDemoChatData

    @Option(help: "Comma-separated language codes (default: all 14).")
    var languages: String?

    @Option(help: "Training conversations per language at most.")
    var limit: Int = 4000

    func run() throws {
      let langs = languages?.split(separator: ",").map(String.init)
      for s in try DemoInstructions.build(out: out, languages: langs, limit: limit) {
        print("\(s.lang): \(s.commands) commands, \(s.train) training and \(s.valid) held-out conversations")
      }
      print("demo instructions written to \(out)")
    }
  }
}
