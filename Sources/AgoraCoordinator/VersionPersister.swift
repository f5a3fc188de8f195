import AgoraRounds
import AgoraRegistry
import AgoraTensor
import AgoraTransport
import AgoraWire
import Foundation

/// Writes each new version in the background while the next round goes on: its weights and optimizer state as
/// blobs (each fsynced and renamed), then the version with its round and contributions in one transaction,
/// then serves the weights. Nodes holding the parent need only the patch; FETCHes of the whole version wait in
/// the blob server's queue until it is written. `finish` joins the write and runs before θ or the optimizer
/// state change again. If the coordinator dies before the commit it restarts from the previous version: the
/// one announced was never recorded (and a version is announced only after `finish`).
final class VersionPersister {
  let store: Registry
  let blobs: BlobServer
  let header: [UInt8]
  let params: FloatBuffer
  private var pending: Job? = nil

  final class Job: @unchecked Sendable {
    let done = DispatchSemaphore(value: 0)
    /// Set (after `error`) when the write has ended, for a check that must not wait.
    let finished = ManagedAtomicFlag()
    var error: Error? = nil
    /// The optimizer-state blob the write made (its hash), if the version has one.
    var stateHash: String? = nil
  }

  init(store: Registry, blobs: BlobServer, header: [UInt8], params: FloatBuffer) {
    self.store = store
    self.blobs = blobs
    self.header = header
    self.params = params
  }

  /// Starts writing θ (hash `hash`) and the optimizer state in the temporary file `state` (adopted as a blob)
  /// as `version`, committed with its round and contributions.
  func persist(hash: [UInt8], state: String?, version record: VersionRecord, round: RoundRecord, contributions: [ContributionRecord]) {
    let (store, blobs, header) = (self.store, self.blobs, self.header)
    let weights = UnsafeRawBufferPointer(start: params.pointer, count: params.count * 4)
    blobs.expect(hash: hash)
    let job = Job()
    pending = job
    Thread {
      do {
        try header.withUnsafeBytes { try store.writeBlob(parts: [$0, weights], hash: hash) }
        FaultInjection.at("mid-write", round: round.number)
        var r = record
        if let state {
          r.optimizer = hex(try store.adoptBlob(state))
          job.stateHash = r.optimizer
        }
        try store.commit(version: r, round: round, contributions: contributions)
        FaultInjection.at("after-commit", round: round.number)
        try blobs.publish(path: store.blobPath(hash), hash: hash, size: header.count + weights.count)
      } catch {
        job.error = error
        blobs.cancel(hash: hash)
      }
      job.finished.set()
      job.done.signal()
    }.start()
  }

  /// Waits for the version being written (if any); rethrows its failure. Returns the optimizer-state blob it
  /// made, if any.
  func finish() throws -> String? {
    guard let job = pending else { return nil }
    job.done.wait()
    pending = nil
    if let e = job.error { throw e }
    return job.stateHash
  }

  /// Whether θ is in its version blob: waits for a write under way (usually long done; at most its ≈0.1 s)
  /// without ending it (`finish` still reports it); false when it failed.
  func written() -> Bool {
    guard let job = pending else { return true }
    if !job.finished.isSet {
      job.done.wait()
      job.done.signal()  // `finish` waits on it too
    }
    return job.error == nil
  }
}
