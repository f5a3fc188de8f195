import AgoraCrypto
import AgoraStorage
import AgoraWire
import Foundation

/// Serves content-addressed blobs (model versions and patches) to nodes in chunks, reading each chunk from
/// its file when it is sent. Memory is bounded by a global budget: at most `budget` chunks are queued for
/// sending across all nodes at once; further FETCH requests wait in a queue (a few bytes each) and are
/// served in arrival order as earlier chunks are taken. A node's chunks count until it asks again (it asks
/// only once it holds them) or until `releaseAfter` seconds have passed (it died or lost them).
public final class BlobServer: @unchecked Sendable {
  public let chunkSize: Int
  public var budget: Int
  public var releaseAfter: Double = 10
  /// Requests waiting beyond this many are refused with ERROR(busy); the node asks again later.
  public var maxPending = 4096
  /// Chunks sent for one request at most, whatever credit it asks for.
  public static let maxCredit = 8
  private let lock = NSLock()
  private var files: [[UInt8]: (path: String, size: Int)] = [:]
  /// The file identity (device, inode, size, modification time) each blob's hash was last checked at: a file
  /// changed since is hashed again before a chunk of it is served, and never served if it no longer matches.
  private var checked: [[UInt8]: FileStamp] = [:]
  /// Blobs found corrupt on disk: unpublished, and named so in the ERROR a FETCH of them gets.
  private var corrupt: Set<[UInt8]> = []
  /// Called (on the serving thread) when a published blob's file no longer hashes to its name.
  public var onCorrupt: ([UInt8], String) -> Void = { _, _ in }
  private struct Request { var peer: [UInt8]; var hash: [UInt8]; var from: Int; var credit: Int }
  private var pending: [Request] = []
  private var inFlight: [[UInt8]: (chunks: Int, at: Date)] = [:]
  private var inFlightTotal = 0
  private var expected: Set<[UInt8]> = []

  /// 8 chunks: measured with `agora bench coordinator --nodes 16` against 4 and 16 (BENCHMARKS.md), as fast as 16 and
  /// 5–10 MB lighter.
  public init(chunkSize: Int = 1 << 20, budget: Int = 8) {
    self.chunkSize = chunkSize
    self.budget = max(1, budget)
  }

  /// Makes a file available under its BLAKE2b-256 content hash (computed here, streaming); returns the hash.
  @discardableResult
  public func publish(path: String) throws -> [UInt8] {
    guard let (hash, size) = Sodium.blake2b(file: path) else { throw TransferError.protocolViolation("cannot read \(path)") }
    try publish(path: path, hash: hash, size: size)
    return hash
  }

  /// A file's identity: what changes when it is written, replaced or truncated.
  struct FileStamp: Equatable {
    var dev: UInt64, ino: UInt64, size: Int64, sec: Int, nsec: Int
    init?(fd: Int32) {
      var st = stat()
      guard fstat(fd, &st) == 0 else { return nil }
      (dev, ino, size, sec, nsec) = (UInt64(st.st_dev), UInt64(st.st_ino), Int64(st.st_size), st.st_mtim.tv_sec, st.st_mtim.tv_nsec)
    }
    init?(path: String) {
      let fd = open(path, O_RDONLY | O_CLOEXEC)
      guard fd >= 0 else { return nil }
      defer { close(fd) }
      self.init(fd: fd)
    }
  }

  /// Makes a file available under a hash the caller has just computed over exactly its `size` bytes.
  public func publish(path: String, hash: [UInt8], size: Int) throws {
    guard size > 0 else { throw TransferError.protocolViolation("\(path) is empty; blobs have at least one byte") }
    let stamp = FileStamp(path: path)
    lock.lock(); files[hash] = (path, size); checked[hash] = stamp; corrupt.remove(hash); expected.remove(hash); lock.unlock()
  }

  /// Stops serving a blob (its file may then be removed).
  public func unpublish(hash: [UInt8]) {
    lock.lock(); files[hash] = nil; checked[hash] = nil; expected.remove(hash); lock.unlock()
  }

  /// Announces a blob that is still being written: FETCHes for it wait in the queue until `publish`
  /// (or are refused after `cancel`).
  public func expect(hash: [UInt8]) {
    lock.lock(); expected.insert(hash); lock.unlock()
  }

  public func cancel(hash: [UInt8]) {
    lock.lock(); expected.remove(hash); lock.unlock()
  }

  public var isPublished: ([UInt8]) -> Bool {
    { [self] h in lock.lock(); defer { lock.unlock() }; return files[h] != nil }
  }

  /// Chunks queued for sending now, across all nodes (for tests and metrics).
  public var queuedChunks: Int { lock.lock(); defer { lock.unlock() }; return inFlightTotal }

  /// Takes a FETCH; returns false for other messages.
  @discardableResult
  public func handle(_ inbound: Inbound, endpoint: Endpoint) -> Bool {
    guard case .success(.fetch(let hash, let from, let credit)) = inbound.message else { return false }
    lock.lock()
    let entry = files[hash]
    if (entry == nil && expected.contains(hash)) || entry.map({ Int(from) < max(1, ($0.size + chunkSize - 1) / chunkSize) }) == true {
      // Asking again means the earlier chunks arrived (or were lost): they no longer count.
      release(inbound.peer)
      pending.removeAll { $0.peer == inbound.peer }
      if pending.count >= maxPending {
        lock.unlock()
        endpoint.send(.error(code: ErrorCode.busy.rawValue, message: "blob server busy; ask again", subject: .blob(hash)), to: inbound.peer)
        return true
      }
      pending.append(Request(peer: inbound.peer, hash: hash, from: Int(from), credit: Int(credit)))
      lock.unlock()
      serve(endpoint: endpoint)
      return true
    }
    if let e = entry, Int(from) == max(1, (e.size + chunkSize - 1) / chunkSize) {
      // FETCH from the chunk count: the node has the whole blob; its chunks no longer count.
      release(inbound.peer)
      lock.unlock()
      serve(endpoint: endpoint)
      return true
    }
    let isCorrupt = corrupt.contains(hash)
    lock.unlock()
    if isCorrupt {
      endpoint.send(.error(code: ErrorCode.unknownVersion.rawValue, message: "blob \(hex(hash).prefix(16))… is corrupt on the coordinator's disk; it is not served",
                           subject: .blob(hash)), to: inbound.peer)
    } else if let e = entry {
      let count = max(1, (e.size + chunkSize - 1) / chunkSize)
      endpoint.send(.error(code: ErrorCode.malformed.rawValue, message: "chunk \(from) of a blob of \(count) chunks", subject: .blob(hash)), to: inbound.peer)
    } else {
      endpoint.send(.error(code: ErrorCode.unknownVersion.rawValue, message: "no blob \(hex(hash).prefix(16))…", subject: .blob(hash)), to: inbound.peer)
    }
    return true
  }

  private func release(_ peer: [UInt8]) {
    if let f = inFlight.removeValue(forKey: peer) { inFlightTotal -= f.chunks }
  }

  /// Sends queued requests while the budget allows; call it whenever the service loop is idle.
  public func serve(endpoint: Endpoint) {
    lock.lock()
    let now = Date()
    for (peer, f) in inFlight where now.timeIntervalSince(f.at) > releaseAfter { _ = f; release(peer) }
    var batch: [(Request, String, Int, Int, Int, FileStamp?)] = []
    var waiting: [Request] = []
    while let r = pending.first, inFlightTotal < budget {
      pending.removeFirst()
      guard let (path, size) = files[r.hash] else {
        if expected.contains(r.hash) { waiting.append(r) }  // still being written
        continue  // else unpublished meanwhile: the node's retry gets an error
      }
      let count = max(1, (size + chunkSize - 1) / chunkSize)
      let n = min(r.credit, BlobServer.maxCredit, count - r.from)
      inFlight[r.peer] = (n, now)
      inFlightTotal += n
      batch.append((r, path, size, count, n, checked[r.hash]))
    }
    pending.insert(contentsOf: waiting, at: 0)
    lock.unlock()
    for (r, path, size, count, n, stamp) in batch {
      let fd = open(path, O_RDONLY | O_CLOEXEC)
      guard fd >= 0 else { continue }
      defer { close(fd) }
      // Changed on disk since its hash was checked: check it again before serving any of it.
      let now = FileStamp(fd: fd)
      if now == nil || now != stamp {
        if let now, Int(now.size) == size, Sodium.blake2b(fd: fd)?.hash == r.hash {
          lock.lock(); checked[r.hash] = now; lock.unlock()
        } else {
          lock.lock(); files[r.hash] = nil; checked[r.hash] = nil; corrupt.insert(r.hash); lock.unlock()
          onCorrupt(r.hash, path)
          endpoint.send(.error(code: ErrorCode.unknownVersion.rawValue, message: "blob \(hex(r.hash).prefix(16))… is corrupt on the coordinator's disk; it is not served",
                               subject: .blob(r.hash)), to: r.peer)
          continue
        }
      }
      for i in r.from..<(r.from + n) {
        // Read straight into a send buffer that libzmq then reads in place (one copy from the page cache).
        let length = min(chunkSize, size - i * chunkSize)
        let buf = endpoint.buffers.take(length)
        // A short or failed read ends the answer: the node's retry gets one once the file is readable again.
        guard (try? Posix.read(fd, path: path, at: i * chunkSize, into: UnsafeMutableRawBufferPointer(start: buf.mutableBytes.baseAddress!, count: length))) != nil else { break }
        endpoint.send(.blobChunk(hash: r.hash, index: UInt32(i), count: UInt32(count), payload: Payload(buf)), to: r.peer)
      }
    }
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
  public var credit: UInt16 = 2  // at most BlobServer.maxCredit are served
  public var timeout: Double = 5
  public var maxRetries = 6
  public init(endpoint: Endpoint) { self.endpoint = endpoint }

  public func fetch(hash: [UInt8], sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
    let hasher = Sodium.Hasher()
    var next = 0, count: Int? = nil, bytes = 0, retries = 0
    var requestedUpTo = 0
    // The time since the last chunk (or request): other messages (heartbeat answers) keep arriving when the
    // request or its chunks were lost with a dropped connection, and must not hold off asking again.
    var lastProgress = Date()
    while count == nil || next < count! {
      if next >= requestedUpTo {
        endpoint.send(.fetch(hash: hash, fromChunk: UInt32(next), credit: credit))
        requestedUpTo = next + Int(credit)
        lastProgress = Date()
      }
      if Date().timeIntervalSince(lastProgress) >= timeout {
        retries += 1
        guard retries <= maxRetries else { throw TransferError.timeout("no blob chunk after \(maxRetries) requests") }
        requestedUpTo = next  // ask again from the first missing chunk
        continue
      }
      guard let inbound = endpoint.receive(timeout: max(0.01, timeout - Date().timeIntervalSince(lastProgress)), where: { !$0.isRoundAnnouncement }),
            case .success(let m) = inbound.message else { continue }
      switch m {
      case .blobChunk(let h, let index, let total, let payload) where h == hash:
        retries = 0
        lastProgress = Date()
        if let c = count, c != Int(total) { throw FetchError.inconsistent("chunk count changed from \(c) to \(total)") }
        count = Int(total)
        guard Int(index) == next else { continue }  // a duplicate from an earlier request
        try payload.withUnsafeBytes {
          hasher.update($0)
          try sink($0)
        }
        bytes += payload.count
        next += 1
      case .error(let code, _, let subject) where code == ErrorCode.busy.rawValue && subject == .blob(hash):
        retries += 1
        guard retries <= maxRetries else { throw TransferError.timeout("blob server busy after \(maxRetries) requests") }
        Thread.sleep(forTimeInterval: 0.2 * Double(retries))
        requestedUpTo = next
      case .error(let code, let text, let subject)
        where subject == .blob(hash) || (subject == .none && (code == ErrorCode.revoked.rawValue || code == ErrorCode.notJoined.rawValue)):
        throw TransferError.rejected(code: code, message: text)
      case .leave(let kind, let reason):
        throw TransferError.sessionEnded(kind, reason)
      default:
        continue
      }
    }
    // Tell the server the blob is complete, so what it counted for this node goes to others.
    if let c = count { endpoint.send(.fetch(hash: hash, fromChunk: UInt32(c), credit: 1)) }
    let got = hasher.finish()
    guard got == hash else { throw FetchError.hashMismatch(expected: hex(hash), got: hex(got)) }
    return bytes
  }
}
