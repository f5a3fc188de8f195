import AgoraCrypto
import AgoraWire
import Foundation

/// Serves content-addressed blobs (model versions) to nodes in chunks, `credit` at a time, reading each
/// chunk from its file when asked: memory is one chunk whatever the blob size.
public final class BlobServer: @unchecked Sendable {
  public let chunkSize: Int
  private let lock = NSLock()
  private var files: [[UInt8]: (path: String, size: Int)] = [:]

  public init(chunkSize: Int = 1 << 20) { self.chunkSize = chunkSize }

  /// Makes a file available under its BLAKE2b-256 content hash (computed here, streaming); returns the hash.
  @discardableResult
  public func publish(path: String) throws -> [UInt8] {
    guard let h = FileHandle(forReadingAtPath: path) else { throw TransferError.protocolViolation("cannot read \(path)") }
    defer { try? h.close() }
    let hasher = Sodium.Hasher()
    var size = 0
    while true {
      let d = h.readData(ofLength: 1 << 20)
      if d.isEmpty { break }
      d.withUnsafeBytes { hasher.update($0) }
      size += d.count
    }
    guard size > 0 else { throw TransferError.protocolViolation("\(path) is empty; blobs have at least one byte") }
    let hash = hasher.finish()
    lock.lock(); files[hash] = (path, size); lock.unlock()
    return hash
  }

  /// Answers a FETCH; returns false for other messages.
  @discardableResult
  public func handle(_ inbound: Inbound, endpoint: Endpoint) -> Bool {
    guard case .success(.fetch(let hash, let from, let credit)) = inbound.message else { return false }
    lock.lock(); let entry = files[hash]; lock.unlock()
    guard let (path, size) = entry, let h = FileHandle(forReadingAtPath: path) else {
      endpoint.send(.error(code: ErrorCode.unknownVersion.rawValue, message: "no blob \(hex(hash).prefix(16))…"), to: inbound.peer)
      return true
    }
    defer { try? h.close() }
    let count = max(1, (size + chunkSize - 1) / chunkSize)
    let end = min(count, Int(from) + Int(credit))
    guard Int(from) < count else {
      endpoint.send(.error(code: ErrorCode.malformed.rawValue, message: "chunk \(from) of a blob of \(count) chunks"), to: inbound.peer)
      return true
    }
    for i in Int(from)..<end {
      try? h.seek(toOffset: UInt64(i * chunkSize))
      let bytes = [UInt8](h.readData(ofLength: chunkSize))
      endpoint.send(.blobChunk(hash: hash, index: UInt32(i), count: UInt32(count), payload: bytes), to: inbound.peer)
    }
    return true
  }
}

public enum FetchError: Error, Equatable, CustomStringConvertible {
  case hashMismatch(expected: String, got: String)
  case inconsistent(String)
  public var description: String {
    switch self {
    case .hashMismatch(let e, let g): return "fetched blob hashes to \(g), expected \(e): not used"
    case .inconsistent(let s): return "fetch: \(s)"
    }
  }
}

/// Fetches a blob by content hash over a node's endpoint, `credit` chunks at a time, asking again from the
/// next missing chunk after a timeout (so it resumes across reconnects), and verifying the hash at the end.
/// Chunks go to `sink` in order; the caller must discard them if this throws.
public struct BlobFetcher {
  public var endpoint: Endpoint
  /// Chunks asked for at once. The coordinator queues up to this many chunks per fetching node, so its
  /// memory grows by nodes × credit × chunk size while they fetch: keep it small.
  public var credit: UInt16 = 2
  public var timeout: Double = 5
  public var maxRetries = 6
  public init(endpoint: Endpoint) { self.endpoint = endpoint }

  public func fetch(hash: [UInt8], sink: ([UInt8]) throws -> Void) throws -> Int {
    let hasher = Sodium.Hasher()
    var next = 0, count: Int? = nil, bytes = 0, retries = 0
    var requestedUpTo = 0
    while count == nil || next < count! {
      if next >= requestedUpTo {
        endpoint.send(.fetch(hash: hash, fromChunk: UInt32(next), credit: credit))
        requestedUpTo = next + Int(credit)
      }
      guard let inbound = endpoint.receive(timeout: timeout) else {
        retries += 1
        guard retries <= maxRetries else { throw TransferError.timeout("no blob chunk after \(maxRetries) requests") }
        requestedUpTo = next  // ask again from the first missing chunk
        continue
      }
      guard case .success(let m) = inbound.message else { continue }
      switch m {
      case .blobChunk(let h, let index, let total, let payload) where h == hash:
        retries = 0
        if let c = count, c != Int(total) { throw FetchError.inconsistent("chunk count changed from \(c) to \(total)") }
        count = Int(total)
        guard Int(index) == next else { continue }  // a duplicate from an earlier request
        payload.withUnsafeBytes { hasher.update($0) }
        try sink(payload)
        bytes += payload.count
        next += 1
      case .error(let code, let text):
        throw TransferError.rejected(code: code, message: text)
      default:
        continue
      }
    }
    let got = hasher.finish()
    guard got == hash else { throw FetchError.hashMismatch(expected: hex(hash), got: hex(got)) }
    return bytes
  }
}
