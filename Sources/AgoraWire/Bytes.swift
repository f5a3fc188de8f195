/// The wire shares its text encodings (hex, JSON strings, printable text) with every layer above it. (The
/// fuzzer compiles this module's files and AgoraText's as one module, where there is nothing to import.)
#if canImport(AgoraText)
@_exported import AgoraText
#endif

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
