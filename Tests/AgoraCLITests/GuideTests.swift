import AgoraTestSupport
import Foundation
import Testing

/// The three guides (docs/coordinator.md, institution.md, donor.md) are one story: a coordinator sets up a
/// federation, an institution and a volunteer join it, the rounds run, the coordinator verifies and exports.
/// This runs their commands — every ```sh block marked `<!-- guide step N [background|while-running|after-rounds] -->`,
/// in the order of N — in a fresh directory with `agora` on the PATH, and checks the outcome. A guide whose
/// command no longer works fails here.
@Suite(.serialized) struct GuideTests {
  struct Block {
    var step: Int
    var mode: String
    var text: String
    var file: String
  }

  /// The marked blocks of `markdown`.
  static func blocks(_ markdown: String, file: String) -> [Block] {
    var found: [Block] = []
    let lines = markdown.components(separatedBy: "\n")
    var i = 0
    while i < lines.count {
      let line = lines[i].trimmingCharacters(in: .whitespaces)
      if line.hasPrefix("<!-- guide step "), line.hasSuffix("-->") {
        let words = line.dropFirst("<!-- guide step ".count).dropLast(3).split(separator: " ")
        let step = Int(words.first ?? "") ?? -1
        let mode = words.count > 1 ? String(words[1]) : "run"
        var j = i + 1
        while j < lines.count && lines[j].trimmingCharacters(in: .whitespaces).isEmpty { j += 1 }
        if j < lines.count && lines[j] == "```sh" {
          var body: [String] = []
          j += 1
          while j < lines.count && lines[j] != "```" { body.append(lines[j]); j += 1 }
          found.append(Block(step: step, mode: mode, text: body.joined(separator: "\n"), file: file))
          i = j
        }
      }
      i += 1
    }
    return found
  }

  /// One bash script of the guides' blocks: background blocks start their commands with logs in `logs/`, a
  /// while-running block is retried until it succeeds (at most 30 s), and the first after-rounds block waits for
  /// the coordinator to exit (at most 10 minutes).
  static func script(_ blocks: [Block], binary: String) -> String {
    var s = """
      set -euo pipefail
      export PATH=\(URL(fileURLWithPath: binary).deletingLastPathComponent().path):$PATH
      mkdir -p logs
      started=()
      trap 'for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

      """
    var waited = false, n = 0
    for b in blocks.sorted(by: { $0.step < $1.step }) {
      s += "# \(b.file), step \(b.step) (\(b.mode))\n"
      switch b.mode {
      case "background":
        for line in b.text.split(separator: "\n") where !line.trimmingCharacters(in: .whitespaces).isEmpty {
          n += 1
          s += "\(line) > logs/\(n).log 2>&1 &\nstarted+=($!)\n"
          if line.contains("agora coordinator ") { s += "coordinator=$!\n" }
        }
      case "while-running":
        s += "ok=0\nfor i in $(seq 1 150); do\n  if (\n\(b.text)\n  ) > logs/status.out 2>&1; then ok=1; break; fi\n  sleep 0.2\ndone\n"
        s += "cat logs/status.out\n[ $ok = 1 ]\n"
      case "after-rounds":
        if !waited {
          s += "timeout 600 tail --pid=$coordinator -f /dev/null\nwait $coordinator\n"
          waited = true
        }
        s += b.text + "\n"
      default:
        s += b.text + "\n"
      }
    }
    return s
  }

  @Test func theGuidesCommandsRunAsWritten() throws {
    var all: [Block] = []
    for f in ["coordinator", "institution", "donor"] {
      let md = try String(contentsOfFile: repoRoot + "/docs/\(f).md", encoding: .utf8)
      let b = Self.blocks(md, file: f + ".md")
      #expect(!b.isEmpty, "docs/\(f).md has no guide steps")
      all += b
    }
    #expect(Set(all.map(\.mode)).isSuperset(of: ["run", "background", "while-running", "after-rounds"]))
    let dir = try temporaryDirectory("agora-guide")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    // What the guides take as given: public text, and the institution's own text.
    try demoSlice(languages: ["de", "fr"], bytes: 40_000, into: dir + "/public")
    try demoSlice(languages: ["pl", "cs"], bytes: 40_000, into: dir + "/inst/text")
    // The guides' ports, moved to free ones (other tests run beside this one).
    let endpoint = freeLocalPort(), dashboard = freeLocalPort()
    let script = Self.script(all, binary: agoraBinary).replacingOccurrences(of: "47190", with: "\(endpoint)")
      .replacingOccurrences(of: "47191", with: "\(dashboard)")
    try script.write(toFile: dir + "/guide.sh", atomically: true, encoding: .utf8)
    let (status, output) = try runProcess("/bin/bash", [dir + "/guide.sh"], in: dir)
    let logs = ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/logs")) ?? []).sorted()
      .map { "--- \($0)\n" + ((try? String(contentsOfFile: dir + "/logs/" + $0, encoding: .utf8)) ?? "") }.joined(separator: "\n")
    #expect(status == 0, "\(output)\n\(logs)")
    #expect(output.contains("all versions verify"), "\(output)")
    for f in ["model.safetensors", "config.json", "tokenizer.json", "README.md", "training_data.json", "training-content-summary.md", "training-content-summary.json"] {
      #expect(FileManager.default.fileExists(atPath: dir + "/release/v3/" + f), "the export holds \(f)")
    }
    // The card names both members; the institution's log says what it sent.
    let card = (try? String(contentsOfFile: dir + "/release/v3/README.md", encoding: .utf8)) ?? ""
    #expect(card.contains("Example University") && card.contains("A volunteer"), "\(card)")
    #expect(logs.contains("sent ") && logs.contains("Example University"), "\(logs)")
    // The institution's declaration reached the summary (its confidential source by category only); the donor
    // trained on a public corpus nobody declared, and agora summary says so.
    #expect(output.contains("### 2.2.2 Private datasets obtained from other third parties") && output.contains("name withheld"), "\(output)")
    #expect(output.contains("the coordinator's public corpus") && output.contains("no declaration"), "\(output)")
  }
}
