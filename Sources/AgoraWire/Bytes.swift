/// Little-endian binary writing for Agora's wire formats.
public struct ByteWriter {
  public private(set) var bytes: [UInt8] = []
  public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

  public mutating func u8(_ v: UInt8) { bytes.append(v) }
  public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
  public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
  public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
  public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
  public mutating func raw(_ b: UnsafeRawBufferPointer) { bytes.append(contentsOf: b) }
  /// A UTF-8 string with a u16 length prefix.
  public mutating func string(_ s: String) { u16(UInt16(s.utf8.count)); bytes.append(contentsOf: s.utf8) }
  /// Bytes with a u32 length prefix.
  public mutating func blob(_ b: [UInt8]) { u32(UInt32(b.count)); bytes.append(contentsOf: b) }
}

/// Why a byte string could not be decoded. Every decoder failure is one of these.
public enum DecodeError: Error, Equatable, CustomStringConvertible {
  /// Fewer bytes than the field needs: (field, needed, available).
  case short(String, needed: Int, available: Int)
  /// Bytes left over after the last field.
  case trailing(Int)
  /// A length or count above its bound: (field, value, bound).
  case tooLarge(String, value: Int, bound: Int)
  /// A field with a value that is not allowed.
  case invalid(String)

  public var description: String {
    switch self {
    case .short(let f, let n, let a): return "\(f): needs \(n) bytes, \(a) left"
    case .trailing(let n): return "\(n) unexpected bytes after the last field"
    case .tooLarge(let f, let v, let b): return "\(f): \(v) exceeds the limit of \(b)"
    case .invalid(let s): return s
    }
  }
}

/// Bounded little-endian reading: every read checks the remaining length first, and lengths read from
/// the input are compared with a caller's bound before anything is allocated.
public struct ByteReader {
  let bytes: [UInt8]
  public private(set) var offset: Int = 0
  public init(_ bytes: [UInt8]) { self.bytes = bytes }
  public var remaining: Int { bytes.count - offset }

  mutating func take(_ n: Int, _ field: String) throws -> ArraySlice<UInt8> {
    guard n >= 0, n <= remaining else { throw DecodeError.short(field, needed: n, available: remaining) }
    defer { offset += n }
    return bytes[offset..<(offset + n)]
  }

  public mutating func u8(_ field: String) throws -> UInt8 { try take(1, field).first! }
  public mutating func u16(_ field: String) throws -> UInt16 { UInt16(littleEndian: try fixed(field)) }
  public mutating func u32(_ field: String) throws -> UInt32 { UInt32(littleEndian: try fixed(field)) }
  public mutating func u64(_ field: String) throws -> UInt64 { UInt64(littleEndian: try fixed(field)) }

  mutating func fixed<T: FixedWidthInteger>(_ field: String) throws -> T {
    let s = try take(MemoryLayout<T>.size, field)
    var v: T = 0
    withUnsafeMutableBytes(of: &v) { $0.copyBytes(from: s) }
    return v
  }

  public mutating func raw(_ n: Int, _ field: String) throws -> [UInt8] { Array(try take(n, field)) }

  /// A u16-prefixed UTF-8 string of at most `max` bytes.
  public mutating func string(_ field: String, max: Int) throws -> String {
    let n = Int(try u16(field + " length"))
    guard n <= max else { throw DecodeError.tooLarge(field, value: n, bound: max) }
    let b = try take(n, field)
    guard let s = String(validating: b, as: UTF8.self) else { throw DecodeError.invalid("\(field) is not valid UTF-8") }
    return s
  }

  /// A u32-prefixed byte string of at most `max` bytes.
  public mutating func blob(_ field: String, max: Int) throws -> [UInt8] {
    let n = Int(try u32(field + " length"))
    guard n <= max else { throw DecodeError.tooLarge(field, value: n, bound: max) }
    return Array(try take(n, field))
  }

  public func expectEnd() throws { if remaining != 0 { throw DecodeError.trailing(remaining) } }
}

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
