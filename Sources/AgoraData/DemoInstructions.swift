import AgoraModel
import AgoraText
import Foundation

/// The demo's instruction set (issue #34), built at set-up from the translated manual pages Debian ships (the
/// same packages as `DemoCorpus`): per language, questions about a command's options answered by the option's
/// description in that language's page, and questions about what a command is for answered by its NAME line.
/// The questions are Agora's own sentences, one pattern per language. Evaluation holds out whole commands
/// (a tenth of each language's commands, by a hash of the command's name), never single lines.
public enum DemoInstructions {
  /// "What does the option OPT of CMD do?" and "What is CMD for?" per language.
  static let questions: [String: (option: String, purpose: String)] = [
    "cs": ("Co dělá volba {opt} příkazu {cmd}?", "K čemu slouží {cmd}?"),
    "da": ("Hvad gør tilvalget {opt} til {cmd}?", "Hvad bruges {cmd} til?"),
    "de": ("Was bewirkt die Option {opt} von {cmd}?", "Wozu dient {cmd}?"),
    "el": ("Τι κάνει η επιλογή {opt} της εντολής {cmd};", "Σε τι χρησιμεύει η εντολή {cmd};"),
    "es": ("¿Qué hace la opción {opt} de {cmd}?", "¿Para qué sirve {cmd}?"),
    "fi": ("Mitä komennon {cmd} valitsin {opt} tekee?", "Mihin komentoa {cmd} käytetään?"),
    "fr": ("Que fait l'option {opt} de {cmd} ?", "À quoi sert {cmd} ?"),
    "hu": ("Mit csinál a(z) {cmd} parancs {opt} kapcsolója?", "Mire való a(z) {cmd} parancs?"),
    "it": ("Che cosa fa l'opzione {opt} di {cmd}?", "A che cosa serve {cmd}?"),
    "nl": ("Wat doet de optie {opt} van {cmd}?", "Waarvoor dient {cmd}?"),
    "pl": ("Co robi opcja {opt} polecenia {cmd}?", "Do czego służy {cmd}?"),
    "pt": ("O que faz a opção {opt} do {cmd}?", "Para que serve o {cmd}?"),
    "ro": ("Ce face opțiunea {opt} a comenzii {cmd}?", "La ce folosește {cmd}?"),
    "sv": ("Vad gör flaggan {opt} för {cmd}?", "Vad används {cmd} till?"),
  ]

  public struct Summary: Sendable {
    public var lang: String
    public var commands: Int
    public var train: Int
    public var valid: Int
  }

  /// The commands held out for evaluation among a language's `commands`: a tenth of them (at least one of
  /// three or more), the first by a hash of the command's name, so a command held out in one language is held
  /// out in every language where as many commands come before it.
  public static func heldOut(_ commands: [String]) -> Set<String> {
    let n = commands.count >= 3 ? max(1, (commands.count + 5) / 10) : 0
    return Set(commands.sorted { fnv1a("agora-instructions/" + $0) < fnv1a("agora-instructions/" + $1) }.prefix(n))
  }

  /// The conversations of one page: (command, [messages]) per option and one for the page's purpose.
  public static func conversations(page: String, lang: String) -> (command: String, chats: [[(role: String, content: String)]])? {
    guard let q = questions[lang] else { return nil }
    let page = Roff.options(page)
    guard let command = page.command, !command.isEmpty, command.count <= 40 else { return nil }
    var out: [[(role: String, content: String)]] = []
    func ask(_ pattern: String, opt: String = "") -> String {
      pattern.replacingOccurrences(of: "{cmd}", with: command).replacingOccurrences(of: "{opt}", with: opt)
    }
    if let s = page.summary, s.count >= 8, s.count <= 300 {
      out.append([("user", ask(q.purpose)), ("assistant", s)])
    }
    var seen = Set<String>()
    for (tag, description) in page.options where description.count >= 12 && description.count <= 600 && tag.count <= 60 {
      guard seen.insert(tag).inserted else { continue }
      out.append([("user", ask(q.option, opt: tag)), ("assistant", description)])
    }
    return out.isEmpty ? nil : (command, out)
  }

  /// Writes `<out>/<lang>/train.jsonl` and `valid.jsonl` for each language (at most `limit` training
  /// conversations each, the first by a hash of their text, so the cut is stable).
  public static func build(out: String, languages: [String]? = nil, limit: Int = 4000) throws -> [Summary] {
    var result: [Summary] = []
    for (lang, pkg) in DemoCorpus.packages where languages?.contains(lang) ?? true {
      let files = try DemoCorpus.packageFiles(pkg).filter { $0.hasSuffix(".gz") && $0.contains("/man/") }.sorted()
      guard !files.isEmpty else { throw DataError.missingSource("\(pkg) lists no manual pages; run scripts/setup") }
      var pages: [String: [[(role: String, content: String)]]] = [:]
      for f in files {
        guard let src = try? DemoCorpus.gunzip(f) else { continue }
        guard let (command, chats) = conversations(page: String(decoding: src, as: UTF8.self), lang: lang) else { continue }
        if pages[command] == nil { pages[command] = chats }  // one page per command (sections repeat names)
      }
      let held = heldOut(Array(pages.keys))
      var train: [(UInt64, Data)] = [], valid: [(UInt64, Data)] = []
      let commands = Set(pages.keys)
      for (command, chats) in pages {
        for c in chats {
          let messages = c.map { "{\"role\": \(jsonString($0.role)), \"content\": \(jsonString($0.content))}" }
          let line = Data(("{\"messages\": [" + messages.joined(separator: ", ") + "]}\n").utf8)
          let key = fnv1a(line)
          if held.contains(command) { valid.append((key, line)) } else { train.append((key, line)) }
        }
      }
      train.sort { $0.0 < $1.0 }
      valid.sort { $0.0 < $1.0 }
      let t = train.prefix(limit), v = valid.prefix(max(1, limit / 8))
      let dir = (out as NSString).appendingPathComponent(lang)
      try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
      try Data(t.flatMap(\.1)).write(to: URL(fileURLWithPath: dir + "/train.jsonl"), options: .atomic)
      try Data(v.flatMap(\.1)).write(to: URL(fileURLWithPath: dir + "/valid.jsonl"), options: .atomic)
      result.append(Summary(lang: lang, commands: commands.count, train: t.count, valid: v.count))
    }
    try Data((sourcesLine + "\n").utf8).write(to: URL(fileURLWithPath: (out as NSString).appendingPathComponent("SOURCES")), options: .atomic)
    return result
  }

  public static let sourcesLine = "agora demo instructions 1: option and purpose questions over Debian's translated manual pages (manpages-*)"
}

extension Roff {
  /// A page's command (from `.TH`), its NAME line's description (after " - "), and its options: each `.TP`
  /// whose tag starts with "-", with the text that follows the tag up to the next paragraph break.
  public static func options(_ source: String) -> (command: String?, summary: String?, options: [(tag: String, description: String)]) {
    var command: String? = nil, summary: String? = nil
    var options: [(tag: String, description: String)] = []
    var inName = false, sections = 0
    var tag: String? = nil, awaitingTag = false, body: [String] = []
    func close() {
      if let t = tag, !body.isEmpty {
        let d = body.joined(separator: " ").split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        if t.hasPrefix("-") && !d.isEmpty { options.append((t, d)) }
      }
      tag = nil
      body = []
    }
    for raw in source.split(separator: "\n", omittingEmptySubsequences: false) {
      let line = String(raw)
      if line.hasPrefix(".\\\"") || line.hasPrefix("'\\\"") || line.hasPrefix("\\\"") { continue }
      if line.hasPrefix(".") || line.hasPrefix("'") {
        let body0 = line.dropFirst().drop { $0 == " " || $0 == "\t" }
        let name = String(body0.prefix { $0 != " " && $0 != "\t" })
        let args = splitArgs(String(body0.dropFirst(name.count)))
        if name == "so" { return (nil, nil, []) }
        if name == "TH", let first = args.first { command = unescape(first).lowercased() }
        if name == "SH" {
          sections += 1
          inName = sections == 1
        }
        if name == "TP" || name == "TQ" {
          close()
          awaitingTag = true
          continue
        }
        if breaks.contains(name) { close(); awaitingTag = false; continue }
        if textMacros.contains(name) {
          let text = unescape(args.joined(separator: name.count == 2 && name != "IP" ? "" : " "))
          if awaitingTag { tag = text.trimmingCharacters(in: .whitespaces); awaitingTag = false } else if tag != nil { body.append(text) }
        }
        continue
      }
      let text = unescape(line).trimmingCharacters(in: .whitespaces)
      if text.isEmpty { close(); continue }
      if inName, summary == nil {
        for sep in [" - ", " – ", " — "] {
          if let r = text.range(of: sep) { summary = String(text[r.upperBound...]).trimmingCharacters(in: .whitespaces); break }
        }
        if let s = summary, let first = s.first { summary = first.uppercased() + s.dropFirst() + (s.hasSuffix(".") ? "" : ".") }
        continue
      }
      if awaitingTag {
        tag = text
        awaitingTag = false
      } else if tag != nil {
        body.append(text)
      }
    }
    close()
    return (command, summary, options)
  }
}
