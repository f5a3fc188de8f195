import AgoraStorage
import AgoraText
import Foundation

/// Reading and writing the `safetensors` format (Hugging Face): an 8-byte little-endian header length,
/// a JSON header mapping tensor names to dtype, shape and byte offsets, then the raw little-endian data.
///
/// The reader trusts nothing in the file: every length, offset and shape is checked, and every problem is
/// a `ModelError.file` naming the file and what is wrong.
public struct SafeTensors {
  public enum DType: String, Sendable {
    case f32 = "F32", i32 = "I32", f16 = "F16", bf16 = "BF16", i64 = "I64", u8 = "U8", i8 = "I8", u16 = "U16", f64 = "F64"
    public var size: Int {
      switch self {
      case .f32, .i32: return 4
      case .f16, .bf16, .u16: return 2
      case .i64, .f64: return 8
      case .u8, .i8: return 1
      }
    }
  }

  public struct Entry: Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let range: Range<Int>
  }

  public let path: String
  public let entries: [String: Entry]
  public let metadata: [String: String]
  /// The whole file (memory-mapped where possible).
  let data: Data
  let dataStart: Int

  /// The largest header accepted (the format's own reference implementation uses 100 MB).
  public static let maxHeaderBytes = 100_000_000

  public init(path: String) throws {
    self.path = path
    func fail(_ s: String) -> ModelError { .file(path: path, problem: s) }
    let d: Data
    do { d = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
      throw fail("cannot read: \(error.localizedDescription)")
    }
    guard d.count >= 8 else { throw fail("not a safetensors file: \(d.count) bytes, shorter than the 8-byte header length") }
    let n = d.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    guard n >= 2, n <= UInt64(Self.maxHeaderBytes), n <= UInt64(d.count - 8) else {
      throw fail("header length \(n) is impossible for a file of \(d.count) bytes (truncated or not safetensors)")
    }
    let headerData = d.subdata(in: 8..<(8 + Int(n)))
    guard let obj = try? JSONSerialization.jsonObject(with: headerData), let header = obj as? [String: Any] else {
      throw fail("header is not a JSON object")
    }
    let start = 8 + Int(n)
    let dataLen = d.count - start
    var entries: [String: Entry] = [:]
    var meta: [String: String] = [:]
    for (name, value) in header {
      if name == "__metadata__" {
        guard let m = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
        for (k, v) in m {
          guard let s = v as? String else { throw fail("__metadata__[\(k)] is not a string") }
          meta[k] = s
        }
        continue
      }
      guard let t = value as? [String: Any], let ds = t["dtype"] as? String,
            let shapeAny = t["shape"] as? [Any], let offAny = t["data_offsets"] as? [Any], offAny.count == 2
      else { throw fail("tensor '\(name)' has no valid dtype, shape and data_offsets") }
      guard let dtype = DType(rawValue: ds) else { throw fail("tensor '\(name)' has unsupported dtype \(ds)") }
      var shape: [Int] = []
      var count = 1
      for s in shapeAny {
        guard let v = (s as? NSNumber)?.intValue, v >= 0, v <= Int(Int32.max) else { throw fail("tensor '\(name)' has a bad dimension \(s)") }
        shape.append(v)
        let (p, o) = count.multipliedReportingOverflow(by: v)
        guard !o, p <= dataLen else { throw fail("tensor '\(name)' shape \(shapeAny) is larger than the file") }
        count = p
      }
      guard let a = (offAny[0] as? NSNumber)?.intValue, let b = (offAny[1] as? NSNumber)?.intValue,
            a >= 0, b >= a, b <= dataLen
      else { throw fail("tensor '\(name)' data_offsets \(offAny) lie outside the \(dataLen) data bytes (truncated?)") }
      guard b - a == count * dtype.size else {
        throw fail("tensor '\(name)' has \(b - a) bytes but shape \(shape) of \(ds) needs \(count * dtype.size)")
      }
      entries[name] = Entry(name: name, dtype: dtype, shape: shape, range: a..<b)
    }
    // Tensors must not overlap.
    let sorted = entries.values.sorted { $0.range.lowerBound < $1.range.lowerBound }
    for (x, y) in zip(sorted, sorted.dropFirst()) where x.range.upperBound > y.range.lowerBound {
      throw fail("tensors '\(x.name)' and '\(y.name)' overlap")
    }
    self.entries = entries
    self.metadata = meta
    self.data = d
    self.dataStart = start
  }

  /// Copies a tensor's values as floats (F32 only), checking its shape when given.
  public func floats(_ name: String, shape: [Int]? = nil) throws -> [Float] {
    let e = try entry(name, dtype: .f32, shape: shape)
    var out = [Float](repeating: 0, count: e.range.count / 4)
    _ = out.withUnsafeMutableBytes { data.copyBytes(to: $0, from: (dataStart + e.range.lowerBound)..<(dataStart + e.range.upperBound)) }
    return out.map { Float(bitPattern: UInt32(littleEndian: $0.bitPattern)) }
  }

  /// Copies a tensor's values into `dst` (F32 only), checking the count.
  public func copyFloats(_ name: String, shape: [Int], into dst: UnsafeMutablePointer<Float>) throws {
    let e = try entry(name, dtype: .f32, shape: shape)
    data.withUnsafeBytes { raw in
      let src = raw.baseAddress! + dataStart + e.range.lowerBound
      UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: e.range.count)
    }
  }

  /// Copies a floating-point tensor (F32, F16, BF16 or F64) into `dst` as binary32, checking its shape:
  /// F16 and BF16 widen exactly, F64 rounds to nearest. Returns the dtype it was stored in.
  @discardableResult
  public func copyConverting(_ name: String, shape: [Int], into dst: UnsafeMutablePointer<Float>) throws -> DType {
    guard let e = entries[name] else { throw ModelError.file(path: path, problem: "tensor '\(name)' is missing") }
    guard shape == e.shape else { throw ModelError.file(path: path, problem: "tensor '\(name)' has shape \(e.shape), expected \(shape)") }
    guard [.f32, .bf16, .f16, .f64].contains(e.dtype) else {
      throw ModelError.file(path: path, problem: "tensor '\(name)' is \(e.dtype.rawValue), not a floating-point type (F32, F16, BF16, F64)")
    }
    let n = shape.reduce(1, *)
    if e.dtype == .f32 {
      // Read, not copied from the mapping: the file's pages stay in the page cache instead of also counting
      // in this process's resident memory next to `dst` (a 100M-parameter model would be held twice).
      let fd = open(path, O_RDONLY)
      guard fd >= 0 else { throw ModelError.file(path: path, problem: "cannot be opened") }
      defer { close(fd) }
      do { try Posix.read(fd, path: path, at: dataStart + e.range.lowerBound, into: UnsafeMutableRawBufferPointer(start: dst, count: 4 * n)) } catch {
        throw ModelError.file(path: path, problem: "tensor '\(name)': \(error)")
      }
      return .f32
    }
    data.withUnsafeBytes { raw in
      let src = raw.baseAddress! + dataStart + e.range.lowerBound
      switch e.dtype {
      case .f32: UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: 4 * n)
      case .bf16: for i in 0..<n { dst[i] = Float(bitPattern: UInt32(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16) }
      case .f16: for i in 0..<n { dst[i] = Float(Float16(bitPattern: UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
      case .f64: for i in 0..<n { dst[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
      default: break
      }
    }
    return e.dtype
  }

  public func int32s(_ name: String) throws -> [Int32] {
    let e = try entry(name, dtype: .i32, shape: nil)
    var out = [Int32](repeating: 0, count: e.range.count / 4)
    _ = out.withUnsafeMutableBytes { data.copyBytes(to: $0, from: (dataStart + e.range.lowerBound)..<(dataStart + e.range.upperBound)) }
    return out
  }

  func entry(_ name: String, dtype: DType, shape: [Int]?) throws -> Entry {
    guard let e = entries[name] else { throw ModelError.file(path: path, problem: "tensor '\(name)' is missing") }
    guard e.dtype == dtype else { throw ModelError.file(path: path, problem: "tensor '\(name)' is \(e.dtype.rawValue), expected \(dtype.rawValue)") }
    if let shape, shape != e.shape {
      throw ModelError.file(path: path, problem: "tensor '\(name)' has shape \(e.shape), expected \(shape)")
    }
    return e
  }

  // MARK: - Writing

  /// A tensor to write: its bytes are read from `pointer` during `write`.
  public struct Output {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let pointer: UnsafeRawPointer
    public init(name: String, dtype: DType = .f32, shape: [Int], pointer: UnsafeRawPointer) {
      self.name = name
      self.dtype = dtype
      self.shape = shape
      self.pointer = pointer
    }
    var byteCount: Int { shape.reduce(1, *) * dtype.size }
  }

  /// The bytes before the data: the header's length (u64) and the JSON header (padded with spaces to a
  /// multiple of 8), for tensors stored back to back in the given order. The same inputs give the same bytes.
  public static func header(_ tensors: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String] = [:]) -> [UInt8] {
    var header = "{"
    if !metadata.isEmpty {
      header += "\"__metadata__\":{"
      header += metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }.joined(separator: ",")
      header += "},"
    }
    var offset = 0
    var parts: [String] = []
    for t in tensors {
      let shape = t.shape.map(String.init).joined(separator: ",")
      let bytes = t.shape.reduce(1, *) * t.dtype.size
      parts.append("\(jsonString(t.name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + bytes)]}")
      offset += bytes
    }
    header += parts.joined(separator: ",") + "}"
    var headerBytes = Array(header.utf8)
    while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
    var len = UInt64(headerBytes.count).littleEndian
    return withUnsafeBytes(of: &len) { Array($0) } + headerBytes
  }

  /// Writes tensors in the given order (the file's bytes depend only on the inputs), atomically:
  /// to a temporary file that is fsynced and then renamed over `path`.
  public static func write(_ tensors: [Output], metadata: [String: String] = [:], to path: String) throws {
    let head = header(tensors.map { ($0.name, $0.dtype, $0.shape) }, metadata: metadata)
    try AtomicFile.write(to: path) { handle in
      try handle.write(contentsOf: Data(head))
      for t in tensors {
        try handle.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: t.pointer), count: t.byteCount, deallocator: .none))
      }
    }
  }
}
