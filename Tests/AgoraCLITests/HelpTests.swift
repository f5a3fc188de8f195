import AgoraTestSupport
import Foundation
import Testing

/// Every command and subcommand of `agora` answers `--help` with its usage (exit 0), and the top level lists
/// each command under one of its four groups: the CLI's surface stays browsable as commands move.
@Suite struct HelpTests {
  /// The subcommand names an ArgumentParser help text lists (lines of its *SUBCOMMANDS sections).
  static func subcommands(_ help: String) -> [String] {
    var names: [String] = []
    var inSection = false
    for line in help.split(separator: "\n", omittingEmptySubsequences: false) {
      if line.hasSuffix("SUBCOMMANDS:") { inSection = true; continue }
      if line.isEmpty || !line.hasPrefix(" ") { inSection = false; continue }  // a section ends at its blank line
      // "  name    abstract" (a two-space indent); continuation lines are indented further.
      if inSection, line.hasPrefix("  "), !line.hasPrefix("   "), let name = line.split(separator: " ").first { names.append(String(name)) }
    }
    return names
  }

  @Test func everyCommandAnswersHelp() throws {
    let (status, top) = try runProcess(agoraBinary, ["--help"])
    #expect(status == 0)
    for group in ["RUNNING A FEDERATION", "THE REGISTRY OF VERSIONS", "DATA, TOKENIZER AND MODEL", "DEVELOPMENT"] {
      #expect(top.contains(group + " SUBCOMMANDS:"), "\(top)")
    }
    let commands = Self.subcommands(top)
    #expect(commands.contains("coordinator") && commands.contains("node") && commands.contains("bench"), "\(commands)")
    var checked = 0
    // Breadth-first over the command tree (bounded: the tree is finite and each level is listed once).
    var queue = commands.map { [$0] }
    while let path = queue.first, checked < 200 {
      queue.removeFirst()
      let (s, help) = try runProcess(agoraBinary, path + ["--help"])
      #expect(s == 0 && help.contains("USAGE: agora " + path.joined(separator: " ")), "agora \(path.joined(separator: " ")) --help: \(help)")
      queue += Self.subcommands(help).filter { $0 != "help" }.map { path + [$0] }
      checked += 1
    }
    #expect(checked >= 30, "checked \(checked) commands")
  }
}
