import AgoraModel
import AgoraStorage
import Foundation

/// A language's text tokenized once into a file of UInt16 ids, memory-mapped for sampling.
///
/// File layout (little-endian): magic `AGTOK001`, tokenizer fingerprint (UInt64), source fingerprint
/// (UInt64: size and modification time), token count (UInt64), source byte count (UInt64), then the ids.
/// An empty line of the source marks a document boundary and becomes `<|endoftext|>`.
public final class TokenStream: @unchecked Sendable {
  public static let magic = Array("AGTOK001".utf8)
  static let headerBytes = 40

  public let path: String
  public let count: Int
  public let sourceBytes: Int
  let data: Data

  /// Opens a cache file, checking its header against the expected fingerprints.
  public init(path: String, tokenizerFingerprint: UInt64? = nil, sourceFingerprint: UInt64? = nil) throws {
    self.path = path
    guard let d = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
      throw DataError.unreadable(path, "cannot read token cache")
    }
    guard d.count >= Self.headerBytes, Array(d.prefix(8)) == Self.magic else { throw DataError.corruptCache(path, "bad magic") }
    let (tf, sf, n, bytes) = d.withUnsafeBytes { r in
      (r.loadUnaligned(fromByteOffset: 8, as: UInt64.self), r.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
       r.loadUnaligned(fromByteOffset: 24, as: UInt64.self), r.loadUnaligned(fromByteOffset: 32, as: UInt64.self))
    }
    if let t = tokenizerFingerprint, t != tf { throw DataError.corruptCache(path, "made with another tokenizer") }
    if let s = sourceFingerprint, s != sf { throw DataError.corruptCache(path, "source text changed") }
    guard n <= UInt64(Int.max / 2), d.count == Self.headerBytes + Int(n) * 2 else {
      throw DataError.corruptCache(path, "size \(d.count) does not match \(n) tokens")
    }
    count = Int(n)
    sourceBytes = Int(bytes)
    data = d
  }

  @inline(__always) public subscript(i: Int) -> Int32 {
    data.withUnsafeBytes { Int32($0.loadUnaligned(fromByteOffset: Self.headerBytes + 2 * i, as: UInt16.self)) }
  }

  /// Adds to `counts` (one per token id) how often each id occurs in the stream.
  public func count(into counts: inout [Int]) {
    data.withUnsafeBytes { r in
      let src = (r.baseAddress! + Self.headerBytes).assumingMemoryBound(to: UInt16.self)
      for i in 0..<count where Int(src[i]) < counts.count { counts[Int(src[i])] += 1 }
    }
  }

  /// Copies `n` ids starting at `start` into `dst`.
  public func copy(start: Int, count n: Int, into dst: UnsafeMutablePointer<Int32>) {
    data.withUnsafeBytes { r in
      let src = (r.baseAddress! + Self.headerBytes).assumingMemoryBound(to: UInt16.self)
      for i in 0..<n { dst[i] = Int32(src[start + i]) }
    }
  }

  /// Fingerprint of a source file: its size and modification time.
  public static func fingerprint(ofFile path: String) -> UInt64 {
    let attrs = try? FileManager.default.attributesOfItem(atPath: path)
    let size = (attrs?[.size] as? NSNumber)?.uint64Value ?? 0
    let mtime = (attrs?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
    return size &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(bitPattern: Int64(mtime * 1000))
  }

  /// Tokenizes `source` into `path` (atomically), streaming: memory stays bounded by the chunk size.
  @discardableResult
  public static func build(source: String, path: String, tokenizer: Tokenizer, tokenizerFingerprint: UInt64) throws -> TokenStream {
    guard tokenizer.vocabSize <= 65536 else { throw DataError.unreadable(path, "token caches hold 16-bit ids; vocabulary \(tokenizer.vocabSize) is too large") }
    guard let input = FileHandle(forReadingAtPath: source) else { throw DataError.unreadable(source, "cannot open") }
    defer { try? input.close() }
    let sourceFP = fingerprint(ofFile: source)
    var total = 0
    var bytes = 0
    try AtomicFile.write(to: path) { out in
      var header = [UInt8](repeating: 0, count: headerBytes)
      header.replaceSubrange(0..<8, with: magic)
      try out.write(contentsOf: Data(header))
      var carry: [UInt8] = []
      var ids: [Int32] = []
      var pendingEOT = false
      func flush() throws {
        let u16 = ids.map { UInt16(truncatingIfNeeded: $0) }
        try u16.withUnsafeBytes { try out.write(contentsOf: Data($0)) }
        total += ids.count
        ids.removeAll(keepingCapacity: true)
      }
      func handle(line: ArraySlice<UInt8>) {
        if line.isEmpty { pendingEOT = true; return }
        if pendingEOT, total + ids.count > 0 { ids.append(tokenizer.eotID) }
        pendingEOT = false
        let s = String(decoding: line, as: UTF8.self) + "\n"
        bytes += s.utf8.count
        tokenizer.encode(s, into: &ids)
      }
      while true {
        let chunk = input.readData(ofLength: 1 << 20)
        if chunk.isEmpty { break }
        carry.append(contentsOf: chunk)
        var start = 0
        while let nl = carry[start...].firstIndex(of: 0x0A) {
          handle(line: carry[start..<nl])
          start = nl + 1
        }
        carry.removeSubrange(0..<start)
        if ids.count > 1 << 20 { try flush() }
      }
      if !carry.isEmpty { handle(line: carry[...]) }
      try flush()
      // Rewrite the header with the final counts.
      try out.seek(toOffset: 8)
      var fields = [tokenizerFingerprint, sourceFP, UInt64(total), UInt64(bytes)]
      try out.write(contentsOf: Data(bytes: &fields, count: 32))
    }
    return try TokenStream(path: path)
  }
}
