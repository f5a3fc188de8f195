import AgoraRounds
import AgoraStorage
import AgoraTensor
import Foundation

/// Where the updates being received land, decrypted in place: a buffer as large as the largest payload a node
/// may send (an fp32 update), allocated once and touched only as far as payloads reach (int8 updates use a
/// quarter of it). With one upload at a time (`rounds.concurrent_uploads = 1`) an fp32 update (56 MB for 14M
/// parameters) is staged in θ's memory instead, once θ is in its version blob, so the coordinator holds
/// θ-or-the-update and the running sum, not all three; θ is read back from the blob (and checked against its
/// checksum) before the next step. With K uploads at once, the buffer is cut into K slots of the federation's
/// largest payload (`configure`), one per streaming upload: K compressed updates fit in what one fp32 update
/// takes, and resident memory grows by at most K − 1 payloads.
final class UpdateStaging {
  let buffer: UnsafeMutableRawBufferPointer
  let params: FloatBuffer
  /// Octets of the safetensors header before θ in a version blob.
  let header: Int
  /// Bytes of an int8 update (and its second moments, when the federation sends them): staging beyond this
  /// holds an fp32 update.
  let int8Bytes: Int
  /// Slots (uploads staged at once) and each one's size (0: one slot, the whole staging area).
  private(set) var slotCount = 1
  private var slotBytes = 0
  /// The slot of each node whose upload streams, and the bytes staged in each slot.
  private var slotOf: [String: Int] = [:]
  private var filled: [Int] = [0]
  /// Bytes of the single slot's upload staged so far (one upload at a time).
  var received: Int { filled[0] }
  /// Whether the update is staged in θ's memory.
  private(set) var inParams = false
  private var paramsChecksum: UInt64 = 0
  private var said = false

  /// `trailer`: octets that follow every update (`BlockMoments`; only with quantised updates).
  init(params: FloatBuffer, header: Int, trailer: Int = 0) {
    self.params = params
    self.header = header
    buffer = .allocate(byteCount: DeltaCodec.encodedSize(count: params.count, format: .fp32), alignment: 64)
    int8Bytes = DeltaCodec.encodedSize(count: params.count, format: .int8) + trailer
  }

  func deallocate() { buffer.deallocate() }

  /// Up to `uploads` slots of `payloadBytes` each (the federation's largest legitimate payload), as many as the
  /// buffer holds; returns how many (1: the single staging area, with fp32 updates in θ's memory).
  @discardableResult
  func configure(uploads: Int, payloadBytes: Int) -> Int {
    precondition(slotOf.isEmpty, "UpdateStaging.configure while uploads stream")
    let k = max(1, min(uploads, buffer.count / max(payloadBytes, 1)))
    (slotCount, slotBytes) = k > 1 ? (k, payloadBytes) : (1, 0)
    filled = [Int](repeating: 0, count: slotCount)
    return slotCount
  }

  /// The staging area: the buffer, or θ's memory (with the octets before it for the payload header).
  var area: UnsafeMutableRawBufferPointer {
    inParams
      ? UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(params.pointer) - DeltaCodec.headerBytes,
                                      count: DeltaCodec.encodedSize(count: params.count, format: .fp32))
      : buffer
  }

  /// Slot `i`'s memory.
  private func region(_ i: Int) -> UnsafeMutableRawBufferPointer {
    slotBytes == 0 ? area : UnsafeMutableRawBufferPointer(rebasing: buffer[(i * slotBytes)..<((i + 1) * slotBytes)])
  }

  /// `node`'s upload starts streaming: it takes a free slot (nothing staged yet).
  func begin(node: String) {
    if let i = slotOf[node] { filled[i] = 0; return }
    guard let i = (0..<slotCount).first(where: { k in !slotOf.values.contains(k) }) else { return }
    slotOf[node] = i
    filled[i] = 0
  }

  /// `node`'s upload ended (taken, refused or abandoned): its slot is free.
  func end(node: String) {
    if let i = slotOf.removeValue(forKey: node) { filled[i] = 0 }
  }

  /// The update `node` staged so far.
  func payload(node: String) -> UnsafeRawBufferPointer {
    guard let i = slotOf[node] else { return UnsafeRawBufferPointer(start: nil, count: 0) }
    return UnsafeRawBufferPointer(start: region(i).baseAddress, count: filled[i])
  }

  /// Where `node`'s next `n` plaintext bytes go: with one slot, past an int8 update's size the update moves into
  /// θ's memory first (when `blob` gives θ's intact version file); nil when it does not fit or the node has no
  /// slot (the receiver then decrypts into its scratch, and `take` refuses the chunk).
  func place(node: String, _ n: Int, blob: () -> String?, log: (String) -> Void) -> UnsafeMutableRawBufferPointer? {
    guard let i = slotOf[node] else { return nil }
    if slotBytes == 0 && filled[i] + n > int8Bytes && !inParams, let path = blob() { moveIntoParams(blob: path, log: log) }
    let a = region(i)
    return filled[i] + n <= a.count ? UnsafeMutableRawBufferPointer(rebasing: a[filled[i]..<(filled[i] + n)]) : nil
  }

  /// Counts a chunk `place` put where it belongs; a chunk decrypted elsewhere is a length error.
  func take(node: String, _ plain: UnsafeRawBufferPointer) throws {
    guard let i = slotOf[node], plain.baseAddress == UnsafeRawPointer(region(i).baseAddress! + filled[i]) else {
      throw DeltaError.length(got: (slotOf[node].map { filled[$0] } ?? 0) + plain.count, expected: slotBytes == 0 ? area.count : slotBytes)
    }
    filled[i] += plain.count
  }

  /// θ is in its version blob `blob` (written and fsynced): the update moves into θ's memory; a thread reads
  /// the blob once meanwhile, into the page cache, for `restore`.
  private func moveIntoParams(blob: String, log: (String) -> Void) {
    guard FileManager.default.isReadableFile(atPath: blob) else { return }
    DurableFile.warm(blob, offset: header, count: params.count * 4)
    paramsChecksum = params.checksum()
    let from = buffer.baseAddress!
    inParams = true
    if received > 0 { area.baseAddress!.copyMemory(from: from, byteCount: received) }
    if !said {
      said = true
      log("  fp32 updates are staged in θ's memory; θ is read back from its version blob before the step")
    }
  }

  /// Reads θ back from `blob` after the update was staged
  /// in θ's memory; an update streaming across the step first moves what it has staged back to the buffer. The
  /// buffer's pages beyond an int8 update (or the update still streaming) go back to the kernel: the step
  /// needs none of them. A blob that no longer holds the same θ is an error.
  func restore(blob: String) throws {
    guard inParams else { return }
    if received > 0 { buffer.baseAddress!.copyMemory(from: area.baseAddress!, byteCount: received) }
    inParams = false
    let keep = max(received, int8Bytes)
    Pages.release(buffer.baseAddress! + keep, bytes: buffer.count - keep)
    let fd = open(blob, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw StorageError.errno(blob, "the current version's weights cannot be read back") }
    defer {
      _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
      close(fd)
    }
    // In two halves at once (the copy from the page cache, or the disk, is most of it).
    let (base, bytes) = (UnsafeMutableRawPointer(params.pointer), params.count * 4)
    let failures = UnsafeMutableBufferPointer<Error?>.allocate(capacity: Parallel.threads)
    failures.initialize(repeating: nil)
    defer { failures.deinitialize(); failures.deallocate() }
    Parallel.forChunks(bytes / 4096 + 1) { c, s, e in
      let lo = s * 4096, hi = min(bytes, e * 4096)
      guard hi > lo else { return }
      do { try Posix.read(fd, path: blob, at: header + lo, into: UnsafeMutableRawBufferPointer(start: base + lo, count: hi - lo)) } catch {
        failures[c] = error
      }
    }
    if let e = failures.compactMap({ $0 }).first { throw e }
    guard params.checksum() == paramsChecksum else {
      throw StorageError(path: blob, problem: "the current version's weights read back differ from those written (checksum)")
    }
  }
}
