import ArgumentParser

@main
struct Agora: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "agora",
    abstract: "Federated training of open multilingual language models.",
    version: "0.1.0",
    subcommands: [DataCommand.self, TokenizerCommand.self, Train.self, Bench.self, ModelCommand.self, ProtocolCommand.self, Keygen.self, TransportCommand.self, CoordinatorCommand.self, NodeCommand.self, Demo.self,
                  VersionsCommand.self, ShowCommand.self, VerifyCommand.self, ExportCommand.self, GCCommand.self, StatusCommand.self])
}

/// Where set-up puts the embedded demo corpus, relative to the working directory.
let defaultDemoData = ".agora/data/demo"

/// Errors that reach the user as one line.
struct CLIError: Error, CustomStringConvertible {
  let description: String
  init(_ s: String) { description = s }
}
