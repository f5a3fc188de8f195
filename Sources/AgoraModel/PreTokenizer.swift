/// GPT-2's pre-tokenisation, as Hugging Face's `ByteLevel` pre-tokenizer applies it (`use_regex: true`):
/// the regular expression
///
///     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
///
/// written out by hand over UTF-8 bytes (a regex engine is several times slower). `\s` is Unicode
/// White_Space, `\p{L}` the letter categories, `\p{N}` the number categories.
public struct PreTokenizer: Sendable {
  enum Class: UInt8 { case letter, number, space, other }

  /// Class of every scalar of the Basic Multilingual Plane; others are looked up on demand.
  let bmp: [UInt8]

  public init() {
    var t = [UInt8](repeating: Class.other.rawValue, count: 0x10000)
    for v in 0..<0x10000 {
      guard let s = Unicode.Scalar(UInt32(v)) else { continue }
      t[v] = Self.classify(s).rawValue
    }
    bmp = t
  }

  static func classify(_ s: Unicode.Scalar) -> Class {
    let p = s.properties
    if p.isWhitespace { return .space }
    switch p.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
    case .decimalNumber, .letterNumber, .otherNumber: return .number
    default: return .other
    }
  }

  /// Decodes the scalar at `i` of valid UTF-8; returns its class and byte length.
  @inline(__always)
  func scalar(_ b: UnsafeBufferPointer<UInt8>, _ i: Int) -> (Class, Int) {
    let c0 = b[i]
    if c0 < 0x80 {
      return (Class(rawValue: bmp[Int(c0)])!, 1)
    }
    var v: UInt32, n: Int
    if c0 >= 0xF0 { v = UInt32(c0 & 0x07); n = 4 } else if c0 >= 0xE0 { v = UInt32(c0 & 0x0F); n = 3 } else { v = UInt32(c0 & 0x1F); n = 2 }
    if i + n > b.count { return (.other, b.count - i) }
    for k in 1..<n { v = (v << 6) | UInt32(b[i + k] & 0x3F) }
    if v < 0x10000 { return (Class(rawValue: bmp[Int(v)])!, n) }
    guard let s = Unicode.Scalar(v) else { return (.other, n) }
    return (Self.classify(s), n)
  }

  /// Calls `body(start, end)` for each pre-token of the UTF-8 text `b`, in order.
  @inline(__always)
  public func split(_ b: UnsafeBufferPointer<UInt8>, _ body: (Int, Int) -> Void) {
    let n = b.count
    var i = 0
    while i < n {
      let c = b[i]
      // 's 't 're 've 'm 'll 'd
      if c == 0x27, i + 1 < n {
        let d = b[i + 1]
        if d == 0x73 || d == 0x74 || d == 0x6D || d == 0x64 { body(i, i + 2); i += 2; continue }
        if i + 2 < n {
          let e = b[i + 2]
          if (d == 0x72 && e == 0x65) || (d == 0x76 && e == 0x65) || (d == 0x6C && e == 0x6C) { body(i, i + 3); i += 3; continue }
        }
      }
      var (cls, len) = scalar(b, i)
      var start = i
      var j = i
      if c == 0x20, i + 1 < n {
        let (next, nlen) = scalar(b, i + 1)
        if next != .space {
          // ' ?X+' with the optional leading space
          cls = next
          j = i + 1 + nlen
          start = i
          while j < n { let (k, l) = scalar(b, j); if k != cls { break }; j += l }
          body(start, j)
          i = j
          continue
        }
      }
      if cls != .space {
        j = i + len
        while j < n { let (k, l) = scalar(b, j); if k != cls { break }; j += l }
        body(i, j)
        i = j
        continue
      }
      // A run of whitespace: \s+(?!\S) leaves the last one for the next token when a non-space follows.
      j = i + len
      var lastStart = i
      while j < n {
        let (k, l) = scalar(b, j)
        if k != .space { break }
        lastStart = j
        j += l
      }
      if j < n, lastStart > start {
        body(start, lastStart)
        i = lastStart
      } else {
        body(start, j)
        i = j
      }
    }
  }
}
