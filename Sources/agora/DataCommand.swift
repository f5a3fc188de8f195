import AgoraData
import ArgumentParser
import Foundation

struct DataCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "data", abstract: "Build and inspect training text.", subcommands: [BuildDemo.self])

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
}
