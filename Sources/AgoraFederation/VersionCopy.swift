import AgoraCrypto
import AgoraTensor
import AgoraTransport
import AgoraWire
import Foundation

/// A node's copy of the federation's current version. `sync` brings it to the version a ROUND announces:
/// nothing to do if it is already there; the int8 patch if the node holds the patch's parent (a quarter of
/// the bytes); otherwise the whole model. Every path ends with the version's BLAKE2b hash checked over the
/// parameters, and a copy that fails any check is never used (the base stays as it was, or is marked
/// unknown so the next round fetches it whole).
public final class VersionCopy {
  /// The parameters of `hash` (meaningless while `hash` is empty).
  public let base: FloatBuffer
  public private(set) var hash: [UInt8] = []

  public struct Sync: Sendable {
    public var bytesFetched = 0
    public var viaPatch = false
  }

  public init(count: Int) { base = FloatBuffer(count: count) }

  /// Brings `base` to `target`, using `work` (the trainer's parameters, or any buffer of the same size) as
  /// scratch so a failed transfer never leaves `base` half-written.
  public func sync(endpoint: Endpoint, target: [UInt8], patchFrom: [UInt8], patchHash: [UInt8], work: FloatBuffer) throws -> Sync {
    precondition(work.count == base.count, "VersionCopy.sync: work buffer size differs")
    var result = Sync()
    guard target != hash else { return result }
    let modelBytes = base.count * 4
    if !hash.isEmpty, patchFrom == hash, patchHash != zero32 {
      do {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(DeltaCodec.encodedSize(count: base.count, format: .int8))
        result.bytesFetched = try BlobFetcher(endpoint: endpoint).fetch(hash: patchHash) { chunk in
          guard bytes.count + chunk.count <= DeltaCodec.encodedSize(count: base.count, format: .fp32) else {
            throw TransferError.protocolViolation("patch longer than a model")
          }
          bytes += chunk
        }
        work.copy(from: base)
        try bytes.withUnsafeBytes { try DeltaCodec.decode($0, into: work.pointer, count: work.count, mode: .subtract) }
        let got = Sodium.blake2b(UnsafeRawBufferPointer(start: work.pointer, count: modelBytes))
        guard got == target else { throw FetchError.hashMismatch(expected: hex(target), got: hex(got)) }
        base.copy(from: work)
        hash = target
        result.viaPatch = true
        return result
      } catch is FetchError {
        // A patch that does not lead to the announced version: fall back to the whole model.
      } catch is DeltaError {
      }
    }
    var offset = 0
    let raw = UnsafeMutableRawPointer(work.pointer)
    result.bytesFetched += try BlobFetcher(endpoint: endpoint).fetch(hash: target) { chunk in
      guard offset + chunk.count <= modelBytes else { throw TransferError.protocolViolation("blob longer than the model") }
      chunk.withUnsafeBytes { raw.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
      offset += chunk.count
    }
    guard offset == modelBytes else { throw TransferError.protocolViolation("blob of \(offset) bytes, expected \(modelBytes)") }
    base.copy(from: work)
    hash = target
    return result
  }
}
