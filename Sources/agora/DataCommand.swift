import AgoraData
import AgoraDisclosure
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
      // What each part is, declared from what Debian ships with the packages (for the AI Act's public summary).
      let day = Declaration.today()
      let sources = DemoCorpus.packages.filter { p in summary.contains { $0.lang == p.lang } }.map {
        DebianDeclaration.Package(package: $0.package, languages: [$0.lang], title: "Debian's manual pages in \(DemoCorpus.languageName($0.lang))",
                                  contentTypes: ["technical documentation", "manual pages"])
      } + [DebianDeclaration.Package(package: DemoCorpus.guidePackage, languages: summary.filter { $0.guidePages > 0 }.map(\.lang).sorted(),
                                     title: "The Debian installation guide", contentTypes: ["technical documentation", "installation guide"])]
      for (dir, who, how) in [(out, "the demo institutions (each declares the sources of its languages)",
                               "reduced to paragraphs, the pages split by a hash of their file names into the institutions' training and validation text"),
                              (pub, "the demo coordinator (its public corpus)",
                               "reduced to paragraphs; the pages a hash of their file names puts in the public part (held by no institution): version 0's warm start and the donors' shards")] {
        let d = try DebianDeclaration.make(sources.filter { !$0.languages.isEmpty }, declarant: who, day: day, how: how)
        try Data(DeclarationFile.toml(d, comment: "What this text is, for the AI Act's public summary of training content: written by agora data build-demo on \(day)\nfrom each Debian package's copyright file, version and home page.").utf8)
          .write(to: URL(fileURLWithPath: dir + "/declaration.toml"), options: .atomic)
      }
      print("declarations written to \(out)/declaration.toml and \(pub)/declaration.toml")
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
      let built = try DemoInstructions.build(out: out, languages: langs, limit: limit)
      for s in built {
        print("\(s.lang): \(s.commands) commands, \(s.train) training and \(s.valid) held-out conversations")
      }
      print("demo instructions written to \(out)")
      let day = Declaration.today()
      let sources = DemoCorpus.packages.filter { p in built.contains { $0.lang == p.lang } }.map {
        DebianDeclaration.Package(package: $0.package, languages: [$0.lang], title: "Debian's manual pages in \(DemoCorpus.languageName($0.lang))",
                                  contentTypes: ["instructions and answers", "technical documentation"])
      }
      let d = try DebianDeclaration.make(sources, declarant: "the demo institutions (each declares the sources of its languages)", day: day,
                                         how: "made into conversations by Agora's own question templates (one per language), each answer the page's own text about a command or an option")
      try Data(DeclarationFile.toml(d, comment: "What these conversations are made of, for the AI Act's public summary of training content: written by\nagora data build-demo-chat on \(day) from each Debian package's copyright file, version and home page.").utf8)
        .write(to: URL(fileURLWithPath: out + "/declaration.toml"), options: .atomic)
      print("declaration written to \(out)/declaration.toml")
    }
  }
}
