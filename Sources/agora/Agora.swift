import AgoraTensor
import ArgumentParser
import Foundation

@main
struct Agora: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "agora",
    abstract: "Federated training of open multilingual language models.",
    version: "0.1.0",
    subcommands: [TransportCommand.self],  // helper processes of the benchmarks and tests; not listed in help
    groupedSubcommands: [
      CommandGroup(name: "Running a federation", subcommands: [Demo.self, CoordinatorCommand.self, NodeCommand.self, Keygen.self, StatusCommand.self, InviteCommand.self, DonateCommand.self]),
      CommandGroup(name: "The registry of versions", subcommands: [VersionsCommand.self, ShowCommand.self, VerifyCommand.self, ExportCommand.self, SummaryCommand.self, GCCommand.self]),
      CommandGroup(name: "Data, tokenizer and model", subcommands: [DataCommand.self, TokenizerCommand.self, Train.self, FineTuneCommand.self, ModelCommand.self, GenerateCommand.self]),
      CommandGroup(name: "Development", subcommands: [Bench.self, SimulateCommand.self, ProtocolCommand.self, LinkEmulatorCommand.self]),
    ])

  /// ArgumentParser's entry point, after the OpenMP runtime is set up for oneDNN (`OpenMPEnvironment`).
  static func main() async {
    OpenMPEnvironment.ensurePassiveWait()
    do {
      var command = try parseAsRoot()
      if var asyncCommand = command as? AsyncParsableCommand {
        try await asyncCommand.run()
      } else {
        try command.run()
      }
    } catch {
      exit(withError: error)
    }
  }
}

/// Where set-up puts the embedded demo corpus, relative to the working directory.
let defaultDemoData = ".agora/data/demo"
/// The demo instruction set (`agora data build-demo-chat`, run by scripts/setup).
let defaultDemoChatData = ".agora/data/demo-chat"

/// Errors that reach the user as one line.
struct CLIError: Error, CustomStringConvertible {
  let description: String
  init(_ s: String) { description = s }
}
