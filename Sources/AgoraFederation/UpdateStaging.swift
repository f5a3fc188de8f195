import AgoraStorage
import AgoraTensor
import Foundation

/// Where the update being received lands, decrypted in place: a buffer as large as the largest payload a node
/// may send (an fp32 update), allocated once and touched only as far as payloads reach (int8 updates use a
/// quarter of it). An fp32 update (56 MB for 14M parameters) is staged in θ's memory instead, once θ is in its
/// version blob, so the coordinator holds θ-or-the-update and the running sum, not all three; θ is read back
/// from the blob (and checked against its checksum) before the next step.
final class UpdateStaging {
  let buffer: UnsafeMutableRawBufferPointer
  let params: FloatBuffer
  /// Octets of the safetensors header before θ in a version blob.
  let header: Int
  /// Bytes of an int8 update: staging beyond this holds an fp32 update.
  let int8Bytes: Int
  /// Bytes of the current upload staged so far.
  var received = 0
  /// Whether the update is staged in θ's memory.
  private(set) var inParams = false
  private var paramsChecksum: UInt64 = 0
  private var said = false

  init(params: FloatBuffer, header: Int) {
    self.params = params
    self.header = header
    buffer = .allocate(byteCount: DeltaCodec.encodedSize(count: params.count, format: .fp32), alignment: 64)
    int8Bytes = DeltaCodec.encodedSize(count: params.count, format: .int8)
  }

  func deallocate() { buffer.deallocate() }

  /// The staging area: the buffer, or θ's memory (with the octets before it for the payload header).
  var area: UnsafeMutableRawBufferPointer {
    inParams
      ? UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(params.pointer) - DeltaCodec.headerBytes,
                                      count: DeltaCodec.encodedSize(count: params.count, format: .fp32))
      : buffer
  }

  /// The update staged so far.
  var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: area.baseAddress, count: received) }

  /// Where the next `n` plaintext bytes go: past an int8 update's size the update moves into θ's memory first
  /// (when `blob` gives θ's intact version file); nil when it does not fit (the receiver then decrypts into its
  /// scratch, and `take` refuses the chunk).
  func place(_ n: Int, blob: () -> String?, log: (String) -> Void) -> UnsafeMutableRawBufferPointer? {
    if received + n > int8Bytes && !inParams, let path = blob() { moveIntoParams(blob: path, log: log) }
    let a = area
    return received + n <= a.count ? UnsafeMutableRawBufferPointer(rebasing: a[received..<(received + n)]) : nil
  }

  /// Counts a chunk `place` put where it belongs; a chunk decrypted elsewhere is a length error.
  func take(_ plain: UnsafeRawBufferPointer) throws {
    guard plain.baseAddress == UnsafeRawPointer(area.baseAddress! + received) else {
      throw DeltaError.length(got: received + plain.count, expected: area.count)
    }
    received += plain.count
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
