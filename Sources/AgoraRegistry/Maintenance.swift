import AgoraCrypto
import AgoraWire
import Foundation
import GRDB

/// What `agora verify` found.
public struct VerifyReport: Sendable {
  public var versions = 0
  public var blobsChecked = 0
  public var bytesChecked = 0
  public var problems: [String] = []
  /// What is not wrong but worth knowing: blobs no version names (a version written just before a crash).
  public var notes: [String] = []
  public var ok: Bool { problems.isEmpty }
}

/// What `agora gc` did (or would do).
public struct GCReport: Sendable {
  public var kept: [Int] = []
  public var freed: [Int] = []
  public var bytesFreed = 0
  public var orphans: [String] = []
  /// Kept versions whose lineage now passes through freed versions (their records stay).
  public var notes: [String] = []
}

extension Registry {
  /// Whether a version's signature verifies with `signKey` over its `VersionStatement` (`parentHash`: the
  /// parent's hash in hex, nil for version 0).
  public func signatureValid(_ v: VersionRecord, parentHash: String?, signKey: [UInt8]) -> Bool {
    let parent = parentHash.flatMap(unhex) ?? [UInt8](repeating: 0, count: 32)
    let statement = VersionStatement.bytes(federation: federation, number: UInt64(v.number), hash: unhex(v.hash) ?? [], parent: parent)
    return Sodium.verify(unhex(v.signature) ?? [], message: statement, publicKey: signKey)
  }

  /// The same, looking the parent up in the registry.
  public func signatureValid(_ v: VersionRecord, signKey: [UInt8]) throws -> Bool {
    signatureValid(v, parentHash: try v.parent.map { try version($0).hash }, signKey: signKey)
  }

  /// Re-hashes every blob a version names, checks every signature with `signKey`, and that every version's
  /// parent exists and is older, down to a single version 0.
  public func verify(signKey: [UInt8]) throws -> VerifyReport {
    var r = VerifyReport()
    let all = try versions()
    let byNumber = Dictionary(uniqueKeysWithValues: all.map { ($0.number, $0) })
    r.versions = all.count
    if all.isEmpty { r.problems.append("the registry holds no version") }
    for v in all {
      if let p = v.parent {
        if byNumber[p] == nil { r.problems.append("version \(v.number): parent \(p) is missing") }
        if p >= v.number { r.problems.append("version \(v.number): parent \(p) is not older") }
      } else if v.number != 0 {
        r.problems.append("version \(v.number) has no parent (only version 0 may)")
      }
      if !signatureValid(v, parentHash: v.parent.flatMap { byNumber[$0] }?.hash, signKey: signKey) {
        r.problems.append("version \(v.number): the signature does not verify with the coordinator's key")
      }
      guard v.freedAt == nil else { continue }
      var named = [(v.hash, "weights of version \(v.number)"), (v.tokenizer, "tokenizer of version \(v.number)")]
      if let o = v.optimizer { named.append((o, "optimizer state of version \(v.number)")) }
      for (hash, what) in named {
        if let e = checkBlob(hash, what: what) { r.problems.append(e.description) } else {
          r.blobsChecked += 1
          r.bytesChecked += (try? FileManager.default.attributesOfItem(atPath: blobPath(hash))[.size] as? Int) ?? 0
        }
      }
    }
    var named = Set(all.flatMap { [$0.hash, $0.tokenizer] + ($0.optimizer.map { [$0] } ?? []) })
    named.formUnion(try db.read { try String.fetchAll($0, VersionRecord.select(VersionRecord.Columns.tokenizer, as: String.self).distinct()) })
    for name in ((try? FileManager.default.contentsOfDirectory(atPath: blobDir)) ?? []).sorted() where !named.contains(name) {
      let size = (try? FileManager.default.attributesOfItem(atPath: blobPath(name))[.size] as? Int) ?? 0
      if name.contains(".tmp-") {
        r.notes.append("\(name): a temporary file an interrupted write left (\(size) bytes); the coordinator removes it when it starts")
      } else if name.hasSuffix(".corrupt") {
        r.notes.append("\(name): a corrupt copy of a version's weights, set aside when the coordinator rebuilt them (\(size) bytes); agora gc removes it")
      } else {
        r.notes.append("blob \(name.prefix(16))… (\(size) bytes) is named by no version (written just before a crash, or no longer needed); agora gc removes it")
      }
    }
    return r
  }

  /// Frees the blobs of old versions: keeps the newest `keepLast`, every version whose number is a multiple of
  /// `keepEvery` (0: none), and always the latest (with its optimizer state, which a restart needs). Records
  /// and lineage stay; versions whose blobs go are marked freed. Also removes blobs no version names (e.g. a
  /// version file written just before a crash, or an old patch) and temporary files left by a crash.
  public func gc(keepLast: Int, keepEvery: Int, dryRun: Bool = false, protect: Set<String> = []) throws -> GCReport {
    var r = GCReport()
    let all = try versions()
    guard let latest = all.last else { return r }
    let newest = Set(all.suffix(max(1, keepLast)).map(\.number))
    var referenced = protect
    // A fine-tuning federation's base (named by version 0's record) is what every adapter version is merged into.
    for v in all {
      if let b = v.base, let o = (try? JSONSerialization.jsonObject(with: Data(b.utf8))) as? [String: Any], let w = o["weights"] as? String { referenced.insert(w) }
    }
    for v in all where v.freedAt == nil {
      let keep = newest.contains(v.number) || (keepEvery > 0 && v.number % keepEvery == 0) || v.number == latest.number
      if keep {
        r.kept.append(v.number)
        referenced.insert(v.hash)
        if let o = v.optimizer { referenced.insert(o) }
        referenced.insert(v.tokenizer)
      } else {
        r.freed.append(v.number)
      }
    }
    for k in r.kept {
      let chain = try lineage(k).dropFirst().map(\.number).filter { r.freed.contains($0) }
      if !chain.isEmpty { r.notes.append("version \(k): its lineage passes through freed versions \(chain.sorted().map(String.init).joined(separator: ", ")) (their records stay)") }
    }
    let fm = FileManager.default
    for name in (try? fm.contentsOfDirectory(atPath: blobDir)) ?? [] {
      let path = blobDir + "/" + name
      if name.contains(".tmp-") { r.orphans.append(name); if !dryRun { try? fm.removeItem(atPath: path) }; continue }
      guard !referenced.contains(name) else { continue }
      let size = (try? fm.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
      r.bytesFreed += size
      if !all.contains(where: { $0.hash == name || $0.optimizer == name }) { r.orphans.append(name) }
      if !dryRun { try fm.removeItem(atPath: path) }
    }
    if !dryRun, !r.freed.isEmpty {
      let now = Date().timeIntervalSince1970
      try db.write { db in
        try VersionRecord.filter(r.freed.contains(VersionRecord.Columns.number)).updateAll(db, VersionRecord.Columns.freedAt.set(to: now))
        try Registry.insertEvent(db, "gc", "versions", "freed \(r.freed.count) versions' blobs (\(r.bytesFreed) bytes), kept \(r.kept.map(String.init).joined(separator: ","))")
      }
    }
    return r
  }

  /// Removes temporary files a crash left in the blob directory (never a named blob).
  public func removeTemporaryFiles() -> [String] {
    let fm = FileManager.default
    let tmps = ((try? fm.contentsOfDirectory(atPath: blobDir)) ?? []).filter { $0.contains(".tmp-") }
    for t in tmps { try? fm.removeItem(atPath: blobDir + "/" + t) }
    return tmps
  }
}
