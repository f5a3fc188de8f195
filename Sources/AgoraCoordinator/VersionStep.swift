import AgoraRounds
import AgoraModel
import AgoraRegistry
import AgoraStorage
import AgoraTensor
import AgoraWire
import Foundation

/// The outer step: the mean Δ of a round (in `sum`) becomes the next θ. The outer optimizer turns it into the
/// step u and θ becomes θ − u. With `broadcast = "int8"` u is quantised (stochastic rounding, seeded by the
/// round), with `broadcast = "int4"` to 4 bits (to nearest, the remainder carried into the next step: error
/// feedback, kept in memory), and the coordinator applies exactly the bytes it publishes as the patch, so a
/// node holding the parent reaches the same bits, and checks them against the version hash.
///
/// The work runs in slices of `MomentumStream.sliceFloats` values on the calling thread: each slice's u is
/// computed (momentum read from and written to disk), encoded into the patch (which is hashed and handed to
/// its file's writer thread) and applied, while a second thread hashes the slices of θ already finished, so the
/// version hash (the step's longest serial part) runs beside the rest instead of after it. A failure part-way
/// leaves θ partly stepped and ends the coordinator, which restarts from the last committed version.
final class VersionStep {
  let outer: OuterOptimizer
  let params: FloatBuffer
  let sum: FloatBuffer
  let weightsHeader: [UInt8]
  let store: Registry
  /// Patches live beside the registry's blobs, not among them: only the latest is kept.
  let patchDir: String
  /// The patch's format (int8 or int4; nil: versions go out whole).
  let patchFormat: DeltaFormat?
  let seed: UInt64
  /// With a 4-bit patch: what the published steps have left out so far (added to the next step).
  let residual: FloatBuffer?
  /// The current version's optimizer-state blob (nil: none yet, m = 0). m lives there, not in memory.
  var stateHash: String? = nil
  /// The patch from the previous version to this one (hashes), when the last round made one.
  var patch: (from: [UInt8], hash: [UInt8], path: String)? = nil

  /// What a step made: θ's new hash, its patch (when broadcast as int8) and its optimizer state (a temporary
  /// file for the persister to adopt).
  struct Made {
    var hash: [UInt8]
    var patch: (hash: [UInt8], path: String, size: Int)?
    var state: String?
  }

  init(outer: OuterOptimizer, params: FloatBuffer, sum: FloatBuffer, weightsHeader: [UInt8], store: Registry, patchDir: String, patchFormat: DeltaFormat?,
       seed: UInt64) {
    self.outer = outer
    self.params = params
    self.sum = sum
    self.weightsHeader = weightsHeader
    self.store = store
    self.patchDir = patchDir
    self.patchFormat = patchFormat
    self.seed = seed
    residual = patchFormat?.nibble == nil ? nil : FloatBuffer(count: params.count)
  }

  /// Steps θ (hash `parent`) with the mean Δ of round `r`. Nil when the step leaves θ bit-identical (e.g. every
  /// step value rounds to zero): then no version is made (a version number always names new content, SPEC
  /// §5.2), the optimizer state stays the parent's and the previous patch stays published.
  func run(round r: Int, parent: [UInt8], marks: inout [(String, Date)]) throws -> Made? {
    let trailing = VersionCopy.Trailing(header: weightsHeader, parameters: params)
    var hashed: [UInt8]? = nil
    defer { if hashed == nil { _ = trailing.finish() } }
    let rounding = DeltaCodec.patchRounding(seed: seed, round: r)
    var patchFile: AddressedFile.Writer? = nil
    if patchFormat != nil {
      try FileManager.default.createDirectory(atPath: patchDir, withIntermediateDirectories: true)
      patchFile = try AddressedFile.Writer(in: patchDir)
    }
    defer { if let f = patchFile { f.abandon() } }
    // The patch is produced slice by slice into a buffer of one slice's blocks, appended to its file and
    // applied to θ: the staging buffer stays untouched (an update streaming across the step keeps its bytes).
    let format = patchFormat ?? .int8
    let patchSize = DeltaCodec.encodedSize(count: params.count, format: format)
    let sliceBytes = DeltaCodec.patchBytes(values: 0..<min(params.count, MomentumStream.sliceFloats), count: params.count, format: format)
    let sliceBuffer = UnsafeMutableRawPointer.allocate(byteCount: max(sliceBytes, 1), alignment: 64)
    defer { sliceBuffer.deallocate() }
    if let file = patchFile { try DeltaCodec.header(count: params.count, format: format).withUnsafeBytes { try file.append($0) } }
    let (p, u) = (params.pointer, sum.pointer)
    let feedback = residual?.buffer
    let apply: (Range<Int>) throws -> Void = { [sum, params] range in
      if let file = patchFile {
        // One thread: the other core hashes the version meanwhile.
        let n = DeltaCodec.encodePatch(UnsafeBufferPointer(sum.buffer), values: range, format: format, into: sliceBuffer, errorFeedback: feedback, rounding: rounding)
        try DeltaCodec.applyPatch(sliceBuffer, values: range, count: params.count, format: format, into: p, mode: .subtract)
        try file.append(UnsafeRawBufferPointer(start: sliceBuffer, count: n))
      } else {
        for i in range { p[i] -= u[i] }
      }
      trailing.advance(to: range.upperBound)
    }
    var state: String? = nil
    if outer.hasMomentum {
      let out = store.temporaryBlobPath("optimizer")
      do {
        try MomentumStream.step(outer: outer, delta: sum, previous: stateHash.map { store.blobPath($0) }, out: out, threads: 1, onSlice: apply)
      } catch {
        unlink(out)
        throw error
      }
      state = out
    } else {
      outer.step(sum)
      for start in stride(from: 0, to: sum.count, by: MomentumStream.sliceFloats) {
        try apply(start..<min(sum.count, start + MomentumStream.sliceFloats))
      }
    }
    marks.append(("outer and patch", Date()))
    var newPatch: (hash: [UInt8], path: String, size: Int)? = nil
    if let file = patchFile {
      let hash = try file.finish()
      patchFile = nil
      newPatch = (hash, patchDir + "/" + hex(hash), patchSize)
      marks.append(("patch file", Date()))
    }
    hashed = trailing.finish()
    guard let h = hashed else { throw ModelError.mismatch("internal: the step ended before the last parameter was hashed") }
    guard h != parent else {
      if let n = newPatch, n.path != patch?.path { try? FileManager.default.removeItem(atPath: n.path) }
      if let st = state { unlink(st) }
      return nil
    }
    return Made(hash: h, patch: newPatch, state: state)
  }
}
