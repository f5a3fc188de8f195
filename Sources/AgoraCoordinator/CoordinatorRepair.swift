import AgoraRounds
import AgoraCrypto
import AgoraRegistry
import AgoraTensor
import AgoraWire
import Foundation

/// A blob found corrupt while the coordinator runs (its file changed on disk and no longer hashes to its name).
/// At start-up `loadNewestIntact` repairs the latest version; here the current version is repaired at once, so
/// that nodes, told ERROR(5) for it, fetch it again and the rounds go on (issue 31: they stalled to the deadline).
extension CoordinatorService {
  /// Writes the current version's weights again — from θ in memory when it holds them, else from its parent's
  /// blob and the kept patch — checks the hash, and serves the blob again. Another blob (an older version, a
  /// patch) is not needed by the round: a node that cannot fetch a patch fetches the version whole.
  func repairCorrupt(_ hash: [UInt8]) {
    guard hash == versionHash else {
      log("  blob \(hex(hash).prefix(16))… is not the current version's weights; nodes fetch version \(version) whole instead")
      return
    }
    let damaged = store.blobPath(versionHash)
    do {
      let weights = FloatBuffer(count: params.count)
      var source = "θ in memory"
      if !staging.inParams {
        weights.copy(from: params)
      }
      if staging.inParams || VersionCopy.hash(header: weightsHeader, parameters: weights) != versionHash {
        guard let patch = stepper.patch, patch.from == parentHash, patch.from != Message.noHash else {
          throw RepairError("θ in memory holds a staged update and no patch from the parent is kept")
        }
        var head = [UInt8](repeating: 0, count: weightsHeader.count)
        try head.withUnsafeMutableBytes { h in
          try store.readBlob(hex(patch.from), into: [h, UnsafeMutableRawBufferPointer(start: weights.pointer, count: weights.count * 4)], what: "the parent of version \(version)")
        }
        guard let bytes = FileManager.default.contents(atPath: patch.path) else { throw RepairError("the kept patch \(patch.path) cannot be read") }
        try bytes.withUnsafeBytes { try DeltaCodec.decode($0, into: weights.pointer, count: weights.count, mode: .subtract) }
        guard VersionCopy.hash(header: weightsHeader, parameters: weights) == versionHash else {
          throw RepairError("the parent and the kept patch do not give version \(version)'s hash")
        }
        source = "its parent and the kept patch"
      }
      if FileManager.default.fileExists(atPath: damaged) { _ = rename(damaged, damaged + ".corrupt") }
      let written = try weightsHeader.withUnsafeBytes { try store.writeBlob(parts: [$0, UnsafeRawBufferPointer(start: weights.pointer, count: weights.count * 4)]) }
      guard written == versionHash else { throw RepairError("the rewritten blob hashes to \(hex(written).prefix(16))…") }
      try blobs.publish(path: damaged, hash: versionHash, size: weightsHeader.count + params.count * 4)
      log("  version \(version)'s weights were corrupt on disk (kept as \((damaged as NSString).lastPathComponent).corrupt); written again from \(source), hash checked, and served again")
      try? store.record(event: "repair", subject: "\(version)", detail: "weights corrupt on disk while running; written again from \(source)")
    } catch {
      log("  version \(version)'s weights are corrupt on disk and could not be repaired: \(error). Nodes cannot fetch it; restart the coordinator "
          + "(it resumes from the newest intact version) or restore \(damaged) from a backup")
    }
  }
}

/// Why a blob could not be repaired.
struct RepairError: Error, CustomStringConvertible {
  let description: String
  init(_ d: String) { description = d }
}
