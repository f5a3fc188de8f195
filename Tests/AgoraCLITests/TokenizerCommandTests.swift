import AgoraData
import AgoraTestSupport
import Foundation
import Testing

/// Runs `agora ARGS` to the end: (status, output).
func agora(_ args: [String]) throws -> (Int32, String) { try runProcess(agoraBinary, args) }

/// A gettext catalogue (.mo, little-endian) of `pairs`, with the header entry first.
func moFile(_ pairs: [(String, String)]) -> [UInt8] {
  let all = [("", "Content-Type: text/plain; charset=UTF-8\n")] + pairs.sorted { $0.0 < $1.0 }
  let n = all.count, originals = 28, translations = 28 + 8 * n
  var strings: [UInt8] = []
  var table1: [UInt8] = [], table2: [UInt8] = []
  let base = 28 + 16 * n
  func u32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }
  var offsets: [(Int, Int)] = []
  for (a, _) in all { offsets.append((a.utf8.count, base + strings.count)); strings += Array(a.utf8) + [0] }
  for (l, o) in offsets { table1 += u32(l) + u32(o) }
  offsets = []
  for (_, b) in all { offsets.append((b.utf8.count, base + strings.count)); strings += Array(b.utf8) + [0] }
  for (l, o) in offsets { table2 += u32(l) + u32(o) }
  return u32(0x9504_12DE) + u32(0) + u32(n) + u32(originals) + u32(translations) + u32(0) + u32(base) + table1 + table2 + strings
}

@Suite(.serialized) struct TokenizerCommandTests {
  /// Two nodes count their own languages (`agora tokenizer count`), the coordinator learns from the tables
  /// (`agora tokenizer learn`): tokenizer.json is byte for byte what `agora tokenizer train` learns from the union
  /// of their text.
  @Test func learningFromNodesTablesEqualsTrainingOnTheUnion() throws {
    let union = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: union) }
    try demoSlice(languages: ["de", "fr", "pl", "el"], bytes: 50_000, into: union)
    let nodeA = union + "-a", nodeB = union + "-b"
    for (dir, langs) in [(nodeA, ["de", "el"]), (nodeB, ["fr", "pl"])] {
      for l in langs {
        try FileManager.default.createDirectory(atPath: dir + "/" + l, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: union + "/\(l)/train.txt", toPath: dir + "/\(l)/train.txt")
      }
    }
    defer { for d in [nodeA, nodeB, union + "-tables"] { try? FileManager.default.removeItem(atPath: d) } }
    for b in ["bytes", "equalize"] {
      var (s, out) = try agora(["tokenizer", "train", "--vocab", "700", "--input", union, "--out", union + "/direct.json", "--balance", b])
      #expect(s == 0, "\(out)")
      for (dir, name) in [(nodeA, "a"), (nodeB, "b")] {
        (s, out) = try agora(["tokenizer", "count", "--input", dir, "--out", union + "-tables/\(name)"])
        #expect(s == 0 && out.contains("0 dropped"), "\(out)")
      }
      (s, out) = try agora(["tokenizer", "learn", union + "-tables/a", union + "-tables/b", "--vocab", "700", "--out", union + "/federated.json", "--balance", b])
      #expect(s == 0, "\(out)")
      let x = try Data(contentsOf: URL(fileURLWithPath: union + "/direct.json")), y = try Data(contentsOf: URL(fileURLWithPath: union + "/federated.json"))
      #expect(x == y, "balance \(b): federated tokenizer differs")
    }
    // A corrupt table is a clear error naming the file.
    try Data([0x41, 0x47, 0x56, 0x43, 1, 2]).write(to: URL(fileURLWithPath: union + "-tables/a/zz.agvc"))
    let (s, out) = try agora(["tokenizer", "learn", union + "-tables/a", "--vocab", "700", "--out", union + "/x.json"])
    #expect(s != 0 && out.contains("zz.agvc") && out.contains("truncated"), "\(out)")
  }

  /// Parallel text from gettext catalogues: the messages every language translates, aligned; the report's
  /// premium is each language's tokens over the median language's.
  @Test func parallelTextFromCataloguesAndThePremium() throws {
    let root = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    let msgs = ["Cannot open the file for reading", "Permission denied while writing", "short"]
    let tr: [String: [String]] = [
      "de": ["Die Datei kann nicht zum Lesen geöffnet werden", "Zugriff beim Schreiben verweigert", "kurz"],
      "el": ["Αδύνατο το άνοιγμα του αρχείου για ανάγνωση", "Άρνηση πρόσβασης κατά την εγγραφή", "σύντομο"],
      "pt_BR": ["Não é possível abrir o arquivo para leitura", "Permissão negada ao gravar", "curto"],
    ]
    for (loc, t) in tr {
      try FileManager.default.createDirectory(atPath: root + "/\(loc)/LC_MESSAGES", withIntermediateDirectories: true)
      try Data(moFile(Array(zip(msgs, t)))).write(to: URL(fileURLWithPath: root + "/\(loc)/LC_MESSAGES/app.mo"))
      // A second catalogue only German has does not shrink the common set.
      if loc == "de" { try Data(moFile([("Only here, in German", "Nur hier, auf Deutsch")])).write(to: URL(fileURLWithPath: root + "/de/LC_MESSAGES/other.mo")) }
    }
    let p = try ParallelText.fromMessageCatalogues(root: root, languages: ["de", "el", "pt-br", "fi"])
    #expect(p["de"] == Array(tr["de"]!.prefix(2)) && p["el"] == Array(tr["el"]!.prefix(2)) && p["pt-br"] == Array(tr["pt_BR"]!.prefix(2)))
    #expect(p["fi"] == nil, "no catalogues for fi")
    #expect(throws: DataError.self) { try ParallelText.catalogue([1, 2, 3]) }
    #expect(throws: DataError.self) { try ParallelText.catalogue(Array(moFile([("a", "b")]).prefix(40))) }
  }
}
