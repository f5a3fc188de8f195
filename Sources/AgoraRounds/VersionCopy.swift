import AgoraCrypto
import AgoraTensor
import AgoraTransport
import AgoraWire
import Foundation

/// A node's copy of the federation's current version. A version blob is `header ‖ parameters`: a
/// safetensors file whose header the node rebuilds from the model config (`Checkpoint.weightsHeader`), so it
/// can check a version's hash after applying a patch without ever holding the blob. `sync` brings it to the version a ROUND announces:
/// nothing to do if it is already there; the int8 patch if the node holds the patch's parent (a quarter of
/// the bytes); otherwise the whole model. Every path ends with the version's BLAKE2b hash checked over the
/// parameters, and a copy that fails any check is never used (the base stays as it was, or is marked
/// unknown so the next round fetches it whole).
public final class VersionCopy {
  /// The parameters of `hash` (meaningless while `hash` is empty).
  public let base: FloatBuffer
  public let header: [UInt8]
  public private(set) var hash: [UInt8] = []

  public struct Sync: Sendable {
    public var bytesFetched = 0
    public var viaPatch = false
  }

  public init(header: [UInt8], count: Int) {
    self.header = header
    base = FloatBuffer(count: count)
  }

  /// BLAKE2b-256 of `header ‖ parameters`: the version hash of these parameters.
  public static func hash(header: [UInt8], parameters: FloatBuffer) -> [UInt8] {
    let h = Sodium.Hasher()
    header.withUnsafeBytes { h.update($0) }
    h.update(UnsafeRawBufferPointer(start: parameters.pointer, count: parameters.count * 4))
    return h.finish()
  }

  /// The version hash of parameters that are being finished front to back: `advance(to:)` says how many
  /// values are final, a thread of its own hashes them meanwhile, and `finish` returns
  /// `hash(header:parameters:)` of the whole once every value was handed over (nil if the producer stopped
  /// early). The producer must not change values it has handed over.
  package final class Trailing: @unchecked Sendable {
    let hasher = Sodium.Hasher()
    let base: UnsafeRawPointer
    let total: Int
    let cond = NSCondition()
    var ready = 0, closed = false
    let done = DispatchSemaphore(value: 0)
    var hashed = 0

    package init(header: [UInt8], parameters: FloatBuffer) {
      hasher.update(header)
      base = UnsafeRawPointer(parameters.pointer)
      total = parameters.count * 4
      Thread { [self] in
        while true {
          cond.lock()
          while ready == hashed && !closed { cond.wait() }
          let (upTo, last) = (ready, closed)
          cond.unlock()
          if upTo > hashed {
            hasher.update(UnsafeRawBufferPointer(start: base + hashed, count: upTo - hashed))
            hashed = upTo
          } else if last {
            break
          }
        }
        done.signal()
      }.start()
    }

    package func advance(to values: Int) {
      cond.lock()
      ready = max(ready, min(values * 4, total))
      cond.signal()
      cond.unlock()
    }

    package func finish() -> [UInt8]? {
      cond.lock()
      closed = true
      cond.signal()
      cond.unlock()
      done.wait()
      return hashed == total ? hasher.finish() : nil
    }
  }

  /// Brings `base` to `target`, using `work` (the trainer's parameters, or any buffer of the same size) as
  /// scratch so a failed transfer never leaves `base` half-written.
  public func sync(endpoint: Endpoint, target: [UInt8], patchFrom: [UInt8], patchHash: [UInt8], work: FloatBuffer) throws -> Sync {
    precondition(work.count == base.count, "VersionCopy.sync: work buffer size differs")
    var result = Sync()
    guard target != hash else { return result }
    let modelBytes = base.count * 4
    if !hash.isEmpty, patchFrom == hash, patchHash != Message.noHash {
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
        let got = VersionCopy.hash(header: header, parameters: work)
        guard got == target else { throw FetchError.hashMismatch(expected: hex(target), got: hex(got)) }
        base.copy(from: work)
        hash = target
        result.viaPatch = true
        return result
      } catch is FetchError {
        // A patch that does not lead to the announced version: fall back to the whole model.
      } catch is DeltaError {
      } catch TransferError.rejected(let code, _) where code == ErrorCode.unknownVersion.rawValue {
        // The coordinator does not serve the patch (gone, or corrupt on its disk): the whole model instead.
      }
    }
    // The whole blob: the header must be the one this model's config gives; the rest is the parameters.
    var offset = 0
    let total = header.count + modelBytes
    let raw = UnsafeMutableRawPointer(work.pointer)
    let header = self.header
    result.bytesFetched += try BlobFetcher(endpoint: endpoint).fetch(hash: target) { chunk in
      guard offset + chunk.count <= total else { throw TransferError.protocolViolation("version blob longer than header and model") }
      for (i, b) in chunk.enumerated() where offset + i < header.count {
        guard b == header[offset + i] else { throw TransferError.protocolViolation("version blob's safetensors header differs from this model's") }
      }
      let skip = max(0, header.count - offset)
      if skip < chunk.count {
        raw.advanced(by: offset + skip - header.count).copyMemory(from: chunk.baseAddress! + skip, byteCount: chunk.count - skip)
      }
      offset += chunk.count
    }
    guard offset == total else { throw TransferError.protocolViolation("version blob of \(offset) bytes, expected \(total)") }
    base.copy(from: work)
    hash = target
    return result
  }
}
