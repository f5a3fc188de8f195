/// The text encodings every layer shares: hexadecimal, JSON string literals (tokenizer.json, safetensors
/// headers, cards, logs) and text from elsewhere made safe to show. No dependencies: the model and the wire
/// both use it without either depending on the other.

/// Lower-case hexadecimal.
public func hex(_ b: [UInt8]) -> String {
  let digits = Array("0123456789abcdef".utf8)
  var out = [UInt8]()
  out.reserveCapacity(b.count * 2)
  for x in b { out.append(digits[Int(x >> 4)]); out.append(digits[Int(x & 15)]) }
  return String(decoding: out, as: UTF8.self)
}

/// Parses hexadecimal (upper or lower case); nil on odd length or a non-hex character.
public func unhex(_ s: String) -> [UInt8]? {
  var out: [UInt8] = []
  var hi: UInt8? = nil
  for c in s.utf8 {
    let v: UInt8
    switch c {
    case 48...57: v = c - 48
    case 97...102: v = c - 87
    case 65...70: v = c - 55
    default: return nil
    }
    if let h = hi { out.append(h << 4 | v); hi = nil } else { hi = v }
  }
  return hi == nil ? out : nil
}

/// JSON string literal for `s` (quotes, backslashes and control characters escaped); also a valid TOML
/// basic string, so enrolment cards use it too.
public func jsonString(_ s: String) -> String {
  var out = "\""
  for u in s.unicodeScalars {
    switch u {
    case "\"": out += "\\\""
    case "\\": out += "\\\\"
    case "\n": out += "\\n"
    case "\r": out += "\\r"
    case "\t": out += "\\t"
    default:
      if u.value < 0x20 || u.value == 0x7F { out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16) } else { out.unicodeScalars.append(u) }
    }
  }
  return out + "\""
}

/// Text from elsewhere (names, reasons, error texts) made safe for each place it is shown.
public enum Printable {
  /// One log line's worth of `s`: control characters (C0, DEL, C1, line and paragraph separators) and
  /// bidirectional overrides are shown as `\u{…}`, so a name cannot start a new line, move the cursor or
  /// recolour a terminal. At most `limit` characters.
  public static func line(_ s: String, limit: Int = 256) -> String {
    var out = ""
    var n = 0
    for u in s.unicodeScalars {
      if n >= limit { out += "…"; break }
      let v = u.value
      if v < 0x20 || (v >= 0x7F && v < 0xA0) || v == 0x2028 || v == 0x2029 || (0x202A...0x202E).contains(v) || (0x2066...0x2069).contains(v) {
        out += "\\u{" + String(v, radix: 16) + "}"
      } else {
        out.unicodeScalars.append(u)
      }
      n += 1
    }
    return out
  }

  /// `s` as HTML or XML text or a quoted attribute value: `&`, `<`, `>`, `"` and `'` escaped, and the characters
  /// XML 1.0 does not allow (C0 controls but tab, line feed and carriage return; U+FFFE, U+FFFF) shown as U+FFFD,
  /// so that a page or an SVG stays well-formed whatever a name holds.
  public static func html(_ s: String) -> String {
    var out = ""
    for c in s.unicodeScalars {
      if (c.value < 0x20 && c.value != 0x09 && c.value != 0x0A && c.value != 0x0D) || c.value == 0xFFFE || c.value == 0xFFFF {
        out += "\u{FFFD}"
        continue
      }
      switch c {
      case "&": out += "&amp;"
      case "<": out += "&lt;"
      case ">": out += "&gt;"
      case "\"": out += "&quot;"
      case "'": out += "&#39;"
      default: out.unicodeScalars.append(c)
      }
    }
    return out
  }
}

/// Text from nodes and files in a Markdown table cell (model cards, summaries): one line, HTML escaped (Hugging
/// Face renders raw HTML in model cards), table pipes and Markdown's link, emphasis and code characters escaped.
public enum MarkdownCell {
  public static func escape(_ s: String) -> String {
    var out = ""
    for ch in Printable.html(Printable.line(s)) {
      switch ch {
      case "|", "`", "[", "]", "*", "_", "\\": out += "\\" + String(ch)
      default: out.append(ch)
      }
    }
    return out
  }
}
