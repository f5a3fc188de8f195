/// Z85 (ZeroMQ RFC 32/Z85): the printable encoding ZeroMQ uses for CURVE keys (32 bytes → 40 characters).
public enum Z85 {
  static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)
  static let decodeTable: [UInt8] = {
    var t = [UInt8](repeating: 0xFF, count: 256)
    for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
    return t
  }()

  /// Encodes bytes whose count is a multiple of 4; nil otherwise.
  public static func encode(_ bytes: [UInt8]) -> String? {
    guard bytes.count % 4 == 0 else { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 5 / 4)
    for i in stride(from: 0, to: bytes.count, by: 4) {
      var v = UInt32(bytes[i]) << 24 | UInt32(bytes[i + 1]) << 16 | UInt32(bytes[i + 2]) << 8 | UInt32(bytes[i + 3])
      var chunk = [UInt8](repeating: 0, count: 5)
      for k in stride(from: 4, through: 0, by: -1) { chunk[k] = alphabet[Int(v % 85)]; v /= 85 }
      out += chunk
    }
    return String(decoding: out, as: UTF8.self)
  }

  /// Decodes a string whose length is a multiple of 5; nil on a bad length, character or overflow.
  public static func decode(_ s: String) -> [UInt8]? {
    let c = Array(s.utf8)
    guard c.count % 5 == 0 else { return nil }
    var out: [UInt8] = []
    for i in stride(from: 0, to: c.count, by: 5) {
      var v: UInt64 = 0
      for k in 0..<5 {
        let d = decodeTable[Int(c[i + k])]
        guard d != 0xFF else { return nil }
        v = v * 85 + UInt64(d)
      }
      guard v <= UInt64(UInt32.max) else { return nil }
      out += [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
    }
    return out
  }
}
