import Foundation

/// Turns man(7) roff source into plain paragraphs: requests and comments are dropped, font and size
/// escapes removed, special-character escapes mapped, and text lines joined into one paragraph per line.
///
/// It is not a typesetter; it keeps the human-written text of a manual page, which is what the demo
/// corpus needs.
public enum Roff {
  static let specials: [String: String] = [
    "em": "—", "en": "–", "hy": "-", "aq": "'", "dq": "\"", "lq": "“", "rq": "”", "oq": "‘", "cq": "’",
    "co": "©", "rg": "®", "bu": "•", "mu": "×", "di": "÷", ">=": "≥", "<=": "≤", "!=": "≠", "+-": "±",
    "->": "→", "<-": "←", "de": "°", "Fo": "«", "Fc": "»", "fo": "‹", "fc": "›", "ti": "~", "ha": "^",
    "rs": "\\", "ga": "`", "ul": "_", "sl": "/", "pl": "+", "mi": "-", "eq": "=", "Bq": "„", "bq": "‚",
    "ss": "ß", "a:": "ä", "o:": "ö", "u:": "ü", "A:": "Ä", "O:": "Ö", "U:": "Ü", "tm": "™", "ba": "|", "br": "|",
  ]

  /// Text-bearing macros whose arguments are kept (font macros join their arguments).
  static let textMacros: Set<String> = ["SH", "SS", "B", "I", "BR", "IR", "BI", "IB", "RB", "RI", "SM", "SB", "IP", "UR", "MT", "Nm", "Nd"]
  /// Macros that end the current paragraph.
  static let breaks: Set<String> = ["PP", "P", "LP", "SH", "SS", "TP", "IP", "HP", "sp", "br", "TQ", "RS", "RE", "nf", "fi", "EX", "EE", "Pp", "Sh"]

  /// Paragraphs of the page, or [] for `.so` redirections and empty pages.
  public static func paragraphs(_ source: String) -> [String] {
    var out: [String] = []
    var current: [String] = []
    func flush() {
      let p = current.joined(separator: " ").split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
      if !p.isEmpty { out.append(p) }
      current.removeAll()
    }
    var skipUntil: String? = nil
    for raw in source.split(separator: "\n", omittingEmptySubsequences: false) {
      let line = String(raw)
      if let end = skipUntil {
        if line.hasPrefix(end) { skipUntil = nil }
        continue
      }
      if line.hasPrefix(".so ") { return [] }
      if line.hasPrefix(".\\\"") || line.hasPrefix("'\\\"") || line.hasPrefix("\\\"") { continue }
      if line.hasPrefix(".") || line.hasPrefix("'") {
        let body = line.dropFirst().drop { $0 == " " || $0 == "\t" }
        let name = String(body.prefix { $0 != " " && $0 != "\t" })
        let args = body.dropFirst(name.count)
        if name == "de" || name == "ig" || name == "am" { skipUntil = ".."; continue }
        if name == "TS" { skipUntil = ".TE"; continue }
        if name == "TH" { continue }
        if breaks.contains(name) { flush() }
        if textMacros.contains(name) {
          let words = splitArgs(String(args))
          let text = unescape(words.joined(separator: name.count == 2 && name != "SH" && name != "SS" && name != "IP" ? "" : " "))
          if name == "SH" || name == "SS" {
            if !text.isEmpty { out.append(text) }
          } else if name == "IP" {
            if let first = words.first { current.append(unescape(first)) }
          } else if !text.isEmpty {
            current.append(text)
          }
        }
        continue
      }
      if line.trimmingCharacters(in: .whitespaces).isEmpty { flush(); continue }
      let text = unescape(line)
      if !text.isEmpty { current.append(text) }
    }
    flush()
    return out
  }

  /// Splits macro arguments on blanks, honouring double quotes.
  static func splitArgs(_ s: String) -> [String] {
    var out: [String] = []
    var cur = ""
    var quoted = false
    var any = false
    for ch in s {
      if ch == "\"" { quoted.toggle(); any = true; continue }
      if !quoted && (ch == " " || ch == "\t") {
        if any || !cur.isEmpty { out.append(cur) }
        cur = ""
        any = false
        continue
      }
      cur.append(ch)
    }
    if any || !cur.isEmpty { out.append(cur) }
    return out
  }

  /// Removes or maps roff escapes in a text line.
  public static func unescape(_ s: String) -> String {
    guard s.contains("\\") else { return s }
    var out = ""
    let chars = Array(s)
    var i = 0
    while i < chars.count {
      let c = chars[i]
      guard c == "\\", i + 1 < chars.count else { out.append(c); i += 1; continue }
      let e = chars[i + 1]
      i += 2
      switch e {
      case "f", "F":  // font: \fB, \f(CW, \f[...]
        if i < chars.count {
          if chars[i] == "(" { i += 3 } else if chars[i] == "[" { while i < chars.count && chars[i] != "]" { i += 1 }; i += 1 } else { i += 1 }
        }
      case "s":  // size: \s+1, \s0, \s(12, \s[..]
        if i < chars.count, chars[i] == "+" || chars[i] == "-" { i += 1 }
        if i < chars.count, chars[i] == "(" { i += 3 } else if i < chars.count, chars[i] == "[" { while i < chars.count && chars[i] != "]" { i += 1 }; i += 1 } else if i < chars.count, chars[i].isNumber { i += 1 }
      case "(":
        if i + 2 <= chars.count { out += specials[String(chars[i..<(i + 2)])] ?? "" }
        i += 2
      case "[":
        var name = ""
        while i < chars.count && chars[i] != "]" { name.append(chars[i]); i += 1 }
        i += 1
        out += specials[name] ?? ""
      case "*":  // strings: \*(lq, \*[..], \*R
        if i < chars.count, chars[i] == "(" {
          if i + 3 <= chars.count { out += specials[String(chars[(i + 1)..<(i + 3)])] ?? "" }
          i += 3
        } else if i < chars.count, chars[i] == "[" {
          var name = ""
          i += 1
          while i < chars.count && chars[i] != "]" { name.append(chars[i]); i += 1 }
          i += 1
          out += specials[name] ?? ""
        } else { i += 1 }
      case "n", "g", "k", "z", "Y", "V", "m", "M":  // registers and the like: skip a one-char or (xx name
        if i < chars.count, chars[i] == "(" { i += 3 } else if i < chars.count, chars[i] == "[" { while i < chars.count && chars[i] != "]" { i += 1 }; i += 1 } else { i += 1 }
      case "h", "v", "w", "l", "L", "o", "D", "X", "b", "x", "N", "R", "A", "B", "C", "H", "S", "Z":  // \h'..' etc.
        if i < chars.count, chars[i] == "'" {
          i += 1
          while i < chars.count && chars[i] != "'" { i += 1 }
          i += 1
        }
      case "-": out.append("-")
      case "e", "\\": out.append("\\")
      case "~", " ", "0": out.append(" ")
      case "&", "|", "^", "%", ",", "/", ":", "c", "d", "u", "p", "a", "t", "{", "}", "r": break
      case "\"": i = chars.count  // comment to end of line
      case "'": out.append("´")
      case "`": out.append("`")
      case ".": out.append(".")
      default: out.append(e)
      }
    }
    return out
  }
}
