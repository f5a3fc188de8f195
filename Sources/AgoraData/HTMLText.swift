/// Plain paragraphs from an HTML page of a manual (DocBook's output, as in Debian's installation guide): the
/// head, scripts, styles, preformatted listings (commands, configuration files) and DocBook's navigation bars
/// are dropped; block elements end a paragraph; inline tags vanish; character references are decoded; white
/// space is collapsed.
public enum HTMLText {
  /// Elements whose content is dropped whole.
  static let dropped: [String] = ["head", "script", "style", "pre"]
  /// Elements that end the current paragraph.
  static let blocks: Set<String> = ["p", "div", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "table",
                                    "tr", "td", "th", "br", "hr", "blockquote", "title", "body", "caption"]

  public static func paragraphs(_ html: String) -> [String] {
    var s = Substring(html)
    var out: [String] = []
    var current = ""
    func flush() {
      let p = decode(current).split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
      if !p.isEmpty { out.append(p) }
      current = ""
    }
    while let lt = s.firstIndex(of: "<") {
      current += s[..<lt]
      if s[lt...].hasPrefix("<!--") {
        s = s[lt...].range(of: "-->").map { s[$0.upperBound...] } ?? s[s.endIndex...]
        continue
      }
      guard let gt = s[lt...].firstIndex(of: ">") else { s = s[s.endIndex...]; break }
      let tag = s[s.index(after: lt)..<gt]
      s = s[s.index(after: gt)...]
      if tag.hasPrefix("!") || tag.hasPrefix("?") { continue }  // doctype, processing instructions
      let closing = tag.hasPrefix("/")
      let name = String(tag.drop(while: { $0 == "/" }).prefix(while: { $0.isLetter || $0.isNumber })).lowercased()
      // An element dropped whole, or a navigation bar: skip past its end tag (neither nests in practice; a bar
      // holds a table, never another div), or to the end when there is none.
      if !closing, dropped.contains(name) || (name == "div" && navigation(tag)) {
        if let end = s.range(of: "</\(name)", options: .caseInsensitive) {
          s = s[end.upperBound...]
          s = s.firstIndex(of: ">").map { s[s.index(after: $0)...] } ?? s
        } else {
          s = s[s.endIndex...]
        }
        flush()
        continue
      }
      if blocks.contains(name) { flush() }
    }
    current += s
    flush()
    return out
  }

  /// DocBook's navigation bars: `<div class="navheader">`, `<div class="navfooter">`.
  static func navigation(_ tag: Substring) -> Bool {
    tag.contains("class=\"navheader\"") || tag.contains("class=\"navfooter\"")
  }

  static let named: [Substring: String] = [
    "amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'", "nbsp": " ", "shy": "", "mdash": "—", "ndash": "–",
    "hellip": "…", "laquo": "«", "raquo": "»", "lsquo": "‘", "rsquo": "’", "ldquo": "“", "rdquo": "”", "bdquo": "„", "copy": "©",
  ]

  /// Decodes character references (`&#228;`, `&#xE4;`, and the common named ones); anything else stays as written.
  static func decode(_ text: String) -> String {
    guard text.contains("&") else { return text }
    var out = ""
    var s = Substring(text)
    while let amp = s.firstIndex(of: "&") {
      out += s[..<amp]
      let rest = s[s.index(after: amp)...]
      if let semi = rest.prefix(12).firstIndex(of: ";") {
        let ref = rest[..<semi]
        var decoded: String?
        if ref.hasPrefix("#x") || ref.hasPrefix("#X") {
          decoded = UInt32(ref.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init).map { String(Character($0)) }
        } else if ref.hasPrefix("#") {
          decoded = UInt32(ref.dropFirst()).flatMap(Unicode.Scalar.init).map { String(Character($0)) }
        } else {
          decoded = named[ref]
        }
        if let decoded {
          out += decoded
          s = rest[rest.index(after: semi)...]
          continue
        }
      }
      out += "&"
      s = rest
    }
    out += s
    return out
  }

  /// English function words that the other demo languages do not also use as words of their own.
  static let englishWords: Set<Substring> = ["the", "and", "you", "that", "with", "this", "your", "will", "can", "from", "which", "be",
                                             "should", "have", "must", "when", "there", "these", "been", "into", "would", "they", "their"]

  /// Whether a paragraph of a translated manual was left in English (untranslated): at least five words, more
  /// than a tenth of them English function words. A translated paragraph that quotes a command or an English
  /// term stays far below that.
  public static func untranslated(_ paragraph: String) -> Bool {
    let words = paragraph.lowercased().split(whereSeparator: { !$0.isLetter })
    guard words.count >= 5 else { return false }
    let english = words.reduce(0) { $0 + (englishWords.contains($1) ? 1 : 0) }
    return english * 10 > words.count
  }
}
