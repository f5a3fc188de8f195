import AgoraRounds
import AgoraCrypto
import AgoraImport
import AgoraModel
import AgoraRegistry
import AgoraStorage
import AgoraTensor
import AgoraWire
import Foundation

/// Resuming from the registry (or making version 0), and repairing a damaged latest version (SPEC §5.2: a
/// number is never given to two models).
extension CoordinatorService {
  /// Resumes from the registry's latest version (weights and optimizer state, hash-checked), or makes
  /// version 0 from the seed and records it. Temporary files a crash left behind are removed first; nothing
  /// the registry names is ever deleted here.
  func openStore(layout: ParameterLayout) throws {
    let fed = config.federation
    for t in store.removeTemporaryFiles() { log("  removed \(t), left by an interrupted write") }
    for card in enrolment.cards {
      let known = try store.nodes().first { $0.fingerprint == card.fingerprint }
      try store.upsert(node: NodeRecord(fingerprint: card.fingerprint, name: card.name, institution: card.institution, contact: card.contact,
                                        role: enrolment.isDonorOnly(card.fingerprint) ? .donor : known?.role ?? .institution, languages: [], status: known?.status ?? .enrolled,
                                        enrolledAt: known?.enrolledAt ?? Date().timeIntervalSince1970, revokedAt: known?.revokedAt,
                                        signKey: hex(card.signPublic), curveKey: hex(card.curvePublic)).keepingLanguages(of: known))
      if known?.status == .revoked { enrolment.revoke(fingerprint: card.fingerprint) }
    }
    // A revocation (refused at once by the ZAP handler) is recorded with the node and in the event log.
    enrolment.onRevoke { [store] card in
      guard var n = try? store.nodes().first(where: { $0.fingerprint == card.fingerprint }) else { return }
      n.status = .revoked
      n.revokedAt = Date().timeIntervalSince1970
      try? store.upsert(node: n)
    }
    if let latest = try store.latestVersion() {
      guard latest.config == configJSON else {
        throw ConfigError(file: fed.path, key: "model.preset", problem: "the registry in \(config.dataDir) holds versions of another model shape (\(latest.preset)); use its configuration or another data directory")
      }
      guard latest.optimizerKind == stepper.outer.kind.rawValue || latest.optimizer == nil else {
        throw ConfigError(file: fed.path, key: "rounds.outer_optimizer", problem: "the registry's versions were made with \(latest.optimizerKind)")
      }
      nextNumber = latest.number + 1
      let resumed = try loadNewestIntact(latest)
      current = CurrentVersion(number: resumed.number, parent: resumed.parent ?? 0, hash: unhex(resumed.hash) ?? [],
                               parentHash: try resumed.parent.map { unhex(try store.version($0).hash) ?? Message.noHash } ?? Message.noHash,
                               signature: unhex(resumed.signature) ?? current.signature)
      firstRound = try store.lastRound() + 1
      log("  resuming \(fed.id) from version \(version) (\(resumed.hash.prefix(12))), round \(firstRound)")
    } else {
      var baseRecord: String? = nil
      if fed.fineTune == nil { GPT.initialise(params, layout: layout, seed: fed.seed) }
      if let (base, pilotRecord) = fineTuneBase, let ft = fed.fineTune {
        // A fine-tuning federation: version 0 is the adapters as peft initialises them (the adapted model is the
        // base), or the base itself; its lineage starts at the base's hash.
        params.copy(from: try fed.fineTuneVersionZero(federated, base: base))
        // The base as the federation holds it (the template's rows added) is kept in the registry beside the
        // versions: an adapter version is exported merged into it.
        let weights = try Checkpoint.weightsHeader(base.config).withUnsafeBytes {
          try store.writeBlob(parts: [$0, UnsafeRawBufferPointer(start: base.parameters.pointer, count: base.parameters.count * 4)])
        }
        var record = pilotRecord
        record.weights = hex(weights)
        record.fineTune = federated.fineTuneLine
        let enc = JSONEncoder()
        enc.outputFormatting = .sortedKeys
        baseRecord = String(decoding: try enc.encode(record), as: UTF8.self)
        log("  version 0: \(ft.summary) on the base \(pilotRecord.summary)"
            + (federated.newTokens.isEmpty ? "" : "; the template's tokens are ids \(federated.newTokens)"))
      } else if let pilot = try fed.pilot() {
        // The pilot checkpoint is version 0 (its shape and hash are already the federation's model hash).
        guard pilot.config == modelConfig else {
          throw ConfigError(file: fed.path, key: "model.init", problem: "the checkpoint changed while the coordinator started (its hash is now \(pilot.base.hash))")
        }
        params.copy(from: pilot.parameters)
        let enc = JSONEncoder()
        enc.outputFormatting = .sortedKeys
        baseRecord = String(decoding: try enc.encode(pilot.base), as: UTF8.self)
        log("  version 0: the pilot checkpoint \(pilot.base.summary)")
      }
      var warmTokens = 0
      if fed.warmStartSteps > 0 {
        log("  version 0: a warm start of \(fed.warmStartSteps) steps on the public corpus")
        warmTokens = try WarmStart.train(params, fed: fed, tokenizer: try Tokenizer(contentsOf: fed.tokenizer), cacheDir: config.dataDir + "/public-cache",
                                         log: log)
      }
      let bytes = UnsafeRawBufferPointer(start: params.pointer, count: params.count * 4)
      current = try signed(number: 0, parent: 0, hash: try weightsHeader.withUnsafeBytes { try store.writeBlob(parts: [$0, bytes]) },
                           parentHash: Message.noHash)
      var genesis = VersionRecord(number: 0, parent: nil, hash: hex(versionHash), optimizer: nil, optimizerKind: stepper.outer.kind.rawValue, round: 0,
                                  createdAt: Date().timeIntervalSince1970, signature: hex(versionSignature), bitsPerByte: [],
                                  tokens: warmTokens, contributors: 0, preset: fed.preset, config: configJSON, tokenizer: tokenizerHash)
      genesis.base = baseRecord
      try store.commitGenesis(genesis)
      if fed.warmStartSteps > 0 {
        try store.record(event: "warm start", subject: "0", detail: "version 0 trained \(fed.warmStartSteps) steps (\(warmTokens) tokens) on the public corpus "
                           + fed.publicData.map { ($0 as NSString).lastPathComponent }.joined(separator: ", "))
      }
    }
    try blobs.publish(path: store.blobPath(versionHash), hash: versionHash, size: weightsHeader.count + params.count * 4)
    blobs.onCorrupt = { [logSink, weak self] hash, path in
      logSink("  blob \(hex(hash).prefix(16))… (\(path)) no longer hashes to its name: it is no longer served")
      self?.corruptFound.append(hash)
    }
  }

  /// Loads θ (and the optimizer state) of `latest`, checked by hash. If its weights blob is corrupt or gone, it
  /// is rebuilt from its parent and the int8 patch the coordinator keeps (when that reaches the same hash);
  /// otherwise the coordinator resumes from the newest older version whose blob is intact, and the next version
  /// takes the next unused number (a number is never given to two models). A corrupt optimizer state restarts
  /// the momentum from zero. Every such repair is logged and recorded in the event log.
  func loadNewestIntact(_ latest: VersionRecord) throws -> VersionRecord {
    if let problem = loadWeights(latest) {
      if try rebuildFromPatch(latest) {
        log("  version \(latest.number)'s weights were \(problem); rebuilt from version \(latest.parent ?? 0) and the kept patch (hash checked)")
        try store.record(event: "repair", subject: "\(latest.number)", detail: "weights rebuilt from the parent and the kept patch after: \(problem)")
      } else {
        var candidate = latest
        var found: VersionRecord? = nil
        while let p = candidate.parent {
          candidate = try store.version(p)
          if candidate.freedAt == nil, loadWeights(candidate) == nil { found = candidate; break }
        }
        guard let older = found else {
          throw StorageError(path: store.blobPath(latest.hash), problem: "version \(latest.number)'s weights were \(problem), and no older version's are intact: restore the blob from a backup")
        }
        log("  version \(latest.number)'s weights were \(problem); resuming from version \(older.number), the intact version before it; the next version is \(nextNumber)")
        try store.record(event: "repair", subject: "\(latest.number)",
                         detail: "weights \(problem); resumed from version \(older.number); the next version is \(nextNumber)")
        return try loadState(older)
      }
    }
    return try loadState(latest)
  }

  /// Reads a version's weights into θ; nil when they are intact, else what is wrong.
  func loadWeights(_ v: VersionRecord) -> String? {
    var head = [UInt8](repeating: 0, count: weightsHeader.count)
    do {
      try head.withUnsafeMutableBytes { h in
        try store.readBlob(v.hash, into: [h, UnsafeMutableRawBufferPointer(start: params.pointer, count: params.count * 4)], what: "weights of version \(v.number)")
      }
    } catch {
      return FileManager.default.fileExists(atPath: store.blobPath(v.hash)) ? "corrupt" : "missing"
    }
    return head == weightsHeader ? nil : "of another model shape"
  }

  /// The optimizer state of `v` (checked whole; m stays in its file, FedAdam's v is loaded), or none.
  func loadState(_ v: VersionRecord) throws -> VersionRecord {
    stepper.stateHash = nil
    guard let o = v.optimizer else { return v }
    do {
      try store.readBlob(o, skipping: params.count * 4, into: stepper.outer.kind == .fedadam ? [UnsafeMutableRawBufferPointer(start: stepper.outer.v.pointer, count: stepper.outer.v.count * 4)] : [],
                         what: "optimizer state of version \(v.number)")
      stepper.stateHash = o
    } catch {
      stepper.outer.v.zero()
      log("  version \(v.number)'s optimizer state is corrupt or missing (\(error)); the outer momentum restarts from zero")
      try store.record(event: "repair", subject: "\(v.number)", detail: "optimizer state unreadable; momentum restarts from zero")
    }
    return v
  }

  /// θ of `v` from its parent's intact blob and a kept patch whose result hashes to `v`'s hash; the blob is
  /// then written again (the corrupt file kept aside as `<hash>.corrupt`). False when no kept patch does it.
  func rebuildFromPatch(_ v: VersionRecord) throws -> Bool {
    guard let p = v.parent, let parent = try? store.version(p), parent.freedAt == nil, loadWeights(parent) == nil else { return false }
    let dir = config.dataDir + "/patches"
    let base = FloatBuffer(count: params.count)
    base.copy(from: params)
    for name in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() where name.count == 64 {
      guard let bytes = FileManager.default.contents(atPath: dir + "/" + name), Sodium.blake2b([UInt8](bytes)) == unhex(name) else { continue }
      params.copy(from: base)
      do { try bytes.withUnsafeBytes { try DeltaCodec.decode($0, into: params.pointer, count: params.count, mode: .subtract) } } catch { continue }
      guard hex(VersionCopy.hash(header: weightsHeader, parameters: params)) == v.hash else { continue }
      let path = store.blobPath(v.hash)
      if FileManager.default.fileExists(atPath: path) { _ = rename(path, path + ".corrupt") }
      try weightsHeader.withUnsafeBytes { try store.writeBlob(parts: [$0, UnsafeRawBufferPointer(start: params.pointer, count: params.count * 4)]) }
      stepper.patch = (unhex(parent.hash) ?? Message.noHash, unhex(name) ?? Message.noHash, dir + "/" + name)
      try blobs.publish(path: dir + "/" + name, hash: unhex(name) ?? Message.noHash, size: bytes.count)
      return true
    }
    params.copy(from: base)
    return false
  }
}
