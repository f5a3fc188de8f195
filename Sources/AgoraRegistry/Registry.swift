import AgoraCrypto
import AgoraStorage
import AgoraWire
import Foundation
import GRDB

/// Why the registry could not do what was asked. Each names the file or row concerned and what to do.
public enum RegistryError: Error, Equatable, CustomStringConvertible {
  /// A data directory with blobs but no database: never silently start a fresh federation over it.
  case missingDatabase(dataDir: String)
  case unreadableDatabase(path: String, reason: String)
  case wrongFederation(path: String, expected: String, found: String)
  case missingBlob(hash: String, path: String, what: String)
  case corruptBlob(hash: String, path: String, got: String)
  case notFound(String)
  /// A file the registry writes or reads could not be: the path and the system's reason.
  case io(path: String, problem: String)
  /// The registry could not be opened or written because its file system is full (or nearly): not a corrupt
  /// registry. `free`: the octets the file system had left.
  case diskFull(path: String, free: Int64, reason: String)

  public var description: String {
    switch self {
    case .missingDatabase(let d):
      return "\(d) holds blobs but no registry.sqlite: it is not a fresh directory, and the federation's history is gone. "
        + "Restore registry.sqlite from a backup, or move the directory away to start a new federation (nothing was changed)."
    case .unreadableDatabase(let p, let r):
      return "\(p): cannot be read as Agora's registry (\(r)). Restore it from a backup; nothing was changed or deleted."
    case .wrongFederation(let p, let e, let f):
      return "\(p) belongs to federation \"\(f)\", not \"\(e)\": use that federation's configuration or another data directory."
    case .missingBlob(let h, let p, let w):
      return "blob \(h.prefix(16))… (\(w)) is missing at \(p): restore it from a backup."
    case .corruptBlob(let h, let p, let g):
      return "blob \(p) does not hash to its name \(h.prefix(16))… (it hashes to \(g.prefix(16))…): it is corrupt and is never served; restore it from a backup."
    case .notFound(let s): return s
    case .io(let p, let r): return "\(p): \(r). Nothing already recorded was changed."
    case .diskFull(let p, let free, let r):
      return "\(p): the disk is full (\(free) octets free; SQLite said: \(r)). The registry is intact: free some space and start again."
    }
  }
}

/// The coordinator's store: content-addressed blobs (BLAKE2b-256 names) under `<data>/blobs` and metadata in
/// `<data>/registry.sqlite` (SQLite in WAL mode through GRDB, named migrations that are never edited once
/// merged). A version becomes visible in one transaction with its round, its contributions and an event,
/// and only after every blob it names is written, fsynced and renamed into place.
public final class Registry: @unchecked Sendable {
  public let dataDir: String
  public let federation: String
  let db: DatabasePool
  public var blobDir: String { dataDir + "/blobs" }
  public var databasePath: String { dataDir + "/registry.sqlite" }

  /// Opens the registry of `dataDir` for `federation`. `create` allows a new one in a directory that holds no
  /// blobs; an existing directory without a database, a database of another federation, or an unreadable one
  /// is a `RegistryError` and nothing is touched.
  public init(dataDir: String, federation: String, create: Bool) throws {
    self.dataDir = dataDir
    self.federation = federation
    let fm = FileManager.default
    let path = dataDir + "/registry.sqlite"
    let exists = fm.fileExists(atPath: path)
    if !exists {
      let blobs = (try? fm.contentsOfDirectory(atPath: dataDir + "/blobs"))?.filter { !$0.hasPrefix(".") } ?? []
      guard create else { throw RegistryError.notFound("\(path) does not exist: no federation has run with this data directory") }
      guard blobs.isEmpty else { throw RegistryError.missingDatabase(dataDir: dataDir) }
      try fm.createDirectory(atPath: dataDir + "/blobs", withIntermediateDirectories: true)
    } else {
      // Check the header before SQLite touches the file (it would otherwise report "not a database" late).
      guard let h = FileHandle(forReadingAtPath: path) else { throw RegistryError.unreadableDatabase(path: path, reason: "cannot open the file") }
      let magic = h.readData(ofLength: 16)
      try? h.close()
      guard magic == Data("SQLite format 3\0".utf8) else {
        throw RegistryError.unreadableDatabase(path: path, reason: magic.isEmpty ? "the file is empty" : "not an SQLite database")
      }
    }
    var config = Configuration()
    config.busyMode = .timeout(10)
    do {
      db = try DatabasePool(path: path, configuration: config)
      try Registry.migrator.migrate(db)
      let found = try db.read { try String.fetchOne($0, sql: "SELECT id FROM federation") }
      if let found, found != federation { throw RegistryError.wrongFederation(path: path, expected: federation, found: found) }
      if found == nil {
        try db.write { try $0.execute(sql: "INSERT INTO federation (id, created_at) VALUES (?, ?)", arguments: [federation, Date().timeIntervalSince1970]) }
      }
    } catch let e as RegistryError {
      throw e
    } catch {
      throw Registry.classify(error, path: path)
    }
  }

  /// Below this many free octets an I/O error of SQLite's is taken for a full disk (it reports one, not
  /// SQLITE_FULL, when it cannot make its -wal or -shm file).
  static let nearlyFull: Int64 = 4 << 20

  /// What an SQLite failure at opening means: a full disk (SQLITE_FULL, or an I/O error with almost no space
  /// left) or an unreadable registry.
  static func classify(_ error: Error, path: String) -> RegistryError {
    let free = freeBytes(near: path)
    if let e = error as? DatabaseError {
      if e.resultCode == .SQLITE_FULL || (e.resultCode == .SQLITE_IOERR && free < nearlyFull) {
        return .diskFull(path: path, free: free, reason: "\(e.message ?? "\(e.resultCode)")")
      }
    }
    return .unreadableDatabase(path: path, reason: "\(error)")
  }

  /// Octets available to this user on the file system that holds `path`'s directory (Int64.max if unknown).
  static func freeBytes(near path: String) -> Int64 {
    var st = statvfs()
    guard statvfs((path as NSString).deletingLastPathComponent, &st) == 0 else { return .max }
    return Int64(st.f_bavail) * Int64(st.f_frsize)
  }

  /// Named migrations, applied in order, never edited once merged (add a new one instead).
  static var migrator: DatabaseMigrator {
    var m = DatabaseMigrator()
    m.registerMigration("v1: federation, nodes, rounds, contributions, versions, events") { db in
      try db.execute(sql: """
        CREATE TABLE federation (id TEXT PRIMARY KEY NOT NULL, created_at DOUBLE NOT NULL);
        CREATE TABLE nodes (
          fingerprint TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, institution TEXT NOT NULL, contact TEXT NOT NULL,
          role TEXT NOT NULL, languages TEXT NOT NULL, status TEXT NOT NULL, enrolled_at DOUBLE NOT NULL, revoked_at DOUBLE,
          sign_key TEXT NOT NULL, curve_key TEXT NOT NULL);
        CREATE TABLE rounds (
          number INTEGER PRIMARY KEY NOT NULL, started_at DOUBLE NOT NULL, ended_at DOUBLE NOT NULL,
          selected INTEGER NOT NULL, accepted INTEGER NOT NULL, rejected INTEGER NOT NULL, late INTEGER NOT NULL,
          outcome TEXT NOT NULL, version INTEGER);
        CREATE TABLE contributions (
          round INTEGER NOT NULL REFERENCES rounds(number), node TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL,
          tokens INTEGER NOT NULL, languages TEXT NOT NULL, steps INTEGER NOT NULL, cpu_seconds DOUBLE NOT NULL,
          bytes INTEGER NOT NULL, loss DOUBLE NOT NULL, weight DOUBLE NOT NULL, late INTEGER NOT NULL,
          PRIMARY KEY (round, node));
        CREATE TABLE versions (
          number INTEGER PRIMARY KEY NOT NULL, parent INTEGER REFERENCES versions(number), hash TEXT NOT NULL UNIQUE,
          optimizer TEXT, optimizer_kind TEXT NOT NULL, round INTEGER NOT NULL, created_at DOUBLE NOT NULL,
          signature TEXT NOT NULL, bits_per_byte TEXT NOT NULL, mean_bits_per_byte DOUBLE,
          tokens INTEGER NOT NULL, contributors INTEGER NOT NULL, preset TEXT NOT NULL, config TEXT NOT NULL,
          tokenizer TEXT NOT NULL, freed_at DOUBLE);
        CREATE TABLE events (
          id INTEGER PRIMARY KEY AUTOINCREMENT, at DOUBLE NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL);
        CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        """)
    }
    m.registerMigration("v2: contributions.norm and cosine") { db in
      try db.execute(sql: "ALTER TABLE contributions ADD COLUMN norm DOUBLE; ALTER TABLE contributions ADD COLUMN cosine DOUBLE")
    }
    m.registerMigration("v3: evaluations (federated evaluation)") { db in
      try db.execute(sql: """
        CREATE TABLE evaluations (
          version INTEGER NOT NULL, node TEXT NOT NULL, name TEXT NOT NULL, language TEXT NOT NULL, bits_per_byte DOUBLE NOT NULL,
          bytes INTEGER NOT NULL, alone DOUBLE, signature TEXT NOT NULL, at DOUBLE NOT NULL,
          PRIMARY KEY (version, node, language));
        """)
    }
    m.registerMigration("v4: versions.dp_noise, dp_epsilon, dp_delta (differential privacy)") { db in
      try db.execute(sql: "ALTER TABLE versions ADD COLUMN dp_noise DOUBLE; ALTER TABLE versions ADD COLUMN dp_epsilon DOUBLE; ALTER TABLE versions ADD COLUMN dp_delta DOUBLE")
    }
    m.registerMigration("v5: versions.base (a pilot checkpoint as version 0)") { db in
      try db.execute(sql: "ALTER TABLE versions ADD COLUMN base TEXT")
    }
    m.registerMigration("v6: declarations (what each contributor declares of its training data, signed)") { db in
      try db.execute(sql: """
        CREATE TABLE declarations (
          id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL, hash TEXT NOT NULL,
          json TEXT NOT NULL, signature TEXT NOT NULL, sign_key TEXT NOT NULL, recorded_at DOUBLE NOT NULL);
        CREATE INDEX declarations_node ON declarations (node, recorded_at);
        CREATE TRIGGER declarations_append_only_update BEFORE UPDATE ON declarations BEGIN SELECT RAISE(ABORT, 'declarations are append-only'); END;
        CREATE TRIGGER declarations_append_only_delete BEFORE DELETE ON declarations BEGIN SELECT RAISE(ABORT, 'declarations are append-only'); END;
        """)
    }
    m.registerMigration("v7: invitations (compute donors enrolling with a signed token)") { db in
      try db.execute(sql: """
        CREATE TABLE invitations (
          id TEXT PRIMARY KEY NOT NULL, role TEXT NOT NULL, uses INTEGER NOT NULL, used INTEGER NOT NULL, expires_at DOUBLE NOT NULL,
          created_at DOUBLE NOT NULL, revoked_at DOUBLE, invite_key TEXT NOT NULL UNIQUE, token TEXT NOT NULL, note TEXT NOT NULL);
        CREATE TABLE invited (
          node TEXT PRIMARY KEY NOT NULL, invitation TEXT NOT NULL REFERENCES invitations(id), name TEXT NOT NULL, card TEXT NOT NULL,
          address TEXT NOT NULL, at DOUBLE NOT NULL);
        """)
    }
    return m
  }

  // MARK: - Blobs

  public func blobPath(_ hash: [UInt8]) -> String { blobDir + "/" + hex(hash) }
  public func blobPath(_ hash: String) -> String { blobDir + "/" + hash }

  /// Writes bytes as a content-addressed blob (temporary file, fsync, rename, fsync of the directory);
  /// returns the hash. An existing blob of that hash is kept.
  @discardableResult
  public func writeBlob(_ bytes: UnsafeRawBufferPointer, hash known: [UInt8]? = nil) throws -> [UInt8] {
    try writeBlob(parts: [bytes], hash: known)
  }

  /// Writes the concatenation of `parts` as one blob, without copying them together. Large blobs (a
  /// version's weights, the optimizer state: tens or hundreds of MB every round) bypass the page cache
  /// (`AddressedFile.writeAddressed`); with an unknown hash the same pass hashes them.
  @discardableResult
  public func writeBlob(parts: [UnsafeRawBufferPointer], hash known: [UInt8]? = nil) throws -> [UInt8] {
    try AddressedFile.writeAddressed(parts: parts, in: blobDir, hash: known)
  }

  /// Makes a finished (fsynced) file a blob: hashes it, renames it to its hash (or removes it when that
  /// blob exists) and returns the hash. For blobs written as they are computed (the optimizer state).
  public func adoptBlob(_ tmp: String) throws -> [UInt8] {
    guard let hash = AddressedFile.hash(of: tmp) else { throw RegistryError.io(path: tmp, problem: "cannot be read") }
    try DurableFile.place(tmp, as: blobPath(hash))
    return hash
  }

  /// A path in the blob directory for a file being written (removed by `removeTemporaryFiles` if a crash
  /// leaves it behind).
  public func temporaryBlobPath(_ what: String) -> String { DurableFile.temporaryPath(in: blobDir, what) }

  public func readBlob(_ hash: String, into out: UnsafeMutableRawBufferPointer, what: String) throws {
    try readBlob(hash, into: [out], what: what)
  }

  /// Reads a blob into `parts` in order (exactly their total size) and checks its hash; on any failure the
  /// parts may hold partial data and must not be used.
  public func readBlob(_ hash: String, into parts: [UnsafeMutableRawBufferPointer], what: String) throws {
    try readBlob(hash, skipping: 0, into: parts, what: what)
  }

  /// `readBlob` whose first `skip` bytes are hashed but not kept (e.g. a state part held elsewhere).
  public func readBlob(_ hash: String, skipping skip: Int, into parts: [UnsafeMutableRawBufferPointer], what: String) throws {
    let path = blobPath(hash)
    guard let h = FileHandle(forReadingAtPath: path) else { throw RegistryError.missingBlob(hash: hash, path: path, what: what) }
    defer { try? h.close() }
    let hasher = Sodium.Hasher()
    let total = skip + parts.reduce(0) { $0 + $1.count }
    var offset = 0
    while true {
      let d = h.readData(ofLength: 1 << 22)
      if d.isEmpty { break }
      guard offset + d.count <= total else { throw RegistryError.corruptBlob(hash: hash, path: path, got: "a file longer than \(total) bytes") }
      d.withUnsafeBytes { b in
        hasher.update(b)
        var start = skip
        for p in parts {  // the intersection of this read with each part
          let lo = max(offset, start), hi = min(offset + b.count, start + p.count)
          if lo < hi { (p.baseAddress! + (lo - start)).copyMemory(from: b.baseAddress! + (lo - offset), byteCount: hi - lo) }
          start += p.count
        }
      }
      offset += d.count
    }
    let got = hex(hasher.finish())
    guard offset == total, got == hash else {
      throw RegistryError.corruptBlob(hash: hash, path: path, got: offset == total ? got : "a file of \(offset) bytes, expected \(total)")
    }
  }

  /// Re-hashes a blob file; returns nil if it is intact, else the problem.
  public func checkBlob(_ hash: String, what: String) -> RegistryError? {
    let path = blobPath(hash)
    guard let digest = AddressedFile.hash(of: path) else { return .missingBlob(hash: hash, path: path, what: what) }
    let got = hex(digest)
    return got == hash ? nil : .corruptBlob(hash: hash, path: path, got: got)
  }

  // MARK: - Records

  public func record(event kind: String, subject: String, detail: String) throws {
    try db.write { try Registry.insertEvent($0, kind, subject, detail) }
  }

  static func insertEvent(_ db: Database, _ kind: String, _ subject: String, _ detail: String) throws {
    try db.execute(sql: "INSERT INTO events (at, kind, subject, detail) VALUES (?, ?, ?, ?)",
                   arguments: [Date().timeIntervalSince1970, kind, subject, detail])
  }

  /// Tries to change the event log (it must fail: the log is append-only). For tests.
  public func tamperWithEventsForTesting() throws {
    try db.write { try $0.execute(sql: "UPDATE events SET detail = 'changed'") }
  }

  public func upsert(node n: NodeRecord) throws {
    try db.write { db in
      let before = try NodeRecord.fetchOne(db, key: n.fingerprint)
      try n.save(db)
      if before == nil {
        try Registry.insertEvent(db, "enrolled", n.fingerprint, "\(n.name) (\(n.institution)) as \(n.role.rawValue)")
      } else if before!.status != n.status {
        try Registry.insertEvent(db, n.status.rawValue, n.fingerprint, n.name)
      }
    }
  }

  /// Commits a new version with its round, the round's contributions and an event, in one transaction.
  public func commit(version v: VersionRecord, round: RoundRecord, contributions: [ContributionRecord]) throws {
    try db.write { db in
      try round.save(db)
      try Registry.save(db, contributions)
      try v.insert(db)
      try Registry.insertEvent(db, "version", "\(v.number)", "round \(v.round), \(v.contributors) contributors, \(v.tokens) tokens, hash \(v.hash.prefix(16))")
    }
  }

  /// Records a round that made no version (quorum not reached, or stopped).
  public func commit(round: RoundRecord, contributions: [ContributionRecord]) throws {
    try db.write { db in
      try round.save(db)
      try Registry.save(db, contributions)
      try Registry.insertEvent(db, "round", "\(round.number)", round.outcome)
    }
  }

  /// Saves contributions and adds their languages and role to the nodes' records.
  static func save(_ db: Database, _ contributions: [ContributionRecord]) throws {
    for c in contributions {
      try c.save(db)
      guard var n = try NodeRecord.fetchOne(db, key: c.node) else { continue }
      n.languages = Set(n.languages).union(c.languages.keys).sorted()
      n.role = c.role
      try n.update(db)
    }
  }

  /// Records an institution's scores of a version (replacing what it reported for that version before).
  public func record(evaluations: [EvaluationRecord]) throws {
    try db.write { db in for e in evaluations { try e.save(db) } }
  }

  /// Every evaluation reported, of versions up to `version` when given.
  public func evaluations(upTo version: Int? = nil) throws -> [EvaluationRecord] {
    try db.read { db in
      var q = EvaluationRecord.order(EvaluationRecord.Columns.version, EvaluationRecord.Columns.language, EvaluationRecord.Columns.node)
      if let version { q = q.filter(EvaluationRecord.Columns.version <= version) }
      return try q.fetchAll(db)
    }
  }

  /// Version 0 (made from the seed, no round).
  public func commitGenesis(_ v: VersionRecord) throws {
    try db.write { db in
      try v.insert(db)
      try Registry.insertEvent(db, "version", "0", v.base == nil ? "initial version from the seed, hash \(v.hash.prefix(16))"
                                 : "initial version: the pilot checkpoint \(v.base!), hash \(v.hash.prefix(16))")
    }
  }

  public func latestVersion() throws -> VersionRecord? {
    try db.read { try VersionRecord.order(VersionRecord.Columns.number.desc).fetchOne($0) }
  }

  public func versions() throws -> [VersionRecord] {
    try db.read { try VersionRecord.order(VersionRecord.Columns.number).fetchAll($0) }
  }

  public func version(_ number: Int) throws -> VersionRecord {
    guard let v = try db.read({ try VersionRecord.fetchOne($0, key: number) }) else { throw RegistryError.notFound("no version \(number)") }
    return v
  }

  public func lastRound() throws -> Int {
    try db.read { try Int.fetchOne($0, sql: "SELECT MAX(number) FROM rounds") } ?? 0
  }

  public func rounds() throws -> [RoundRecord] {
    try db.read { try RoundRecord.order(RoundRecord.Columns.number).fetchAll($0) }
  }

  public func contributions(round: Int? = nil) throws -> [ContributionRecord] {
    try db.read { db in
      if let round { return try ContributionRecord.filter(ContributionRecord.Columns.round == round).order(ContributionRecord.Columns.node).fetchAll(db) }
      return try ContributionRecord.order(ContributionRecord.Columns.round, ContributionRecord.Columns.node).fetchAll(db)
    }
  }

  public func nodes() throws -> [NodeRecord] {
    try db.read { try NodeRecord.order(NodeRecord.Columns.name).fetchAll($0) }
  }

  public func events(limit: Int = 1000) throws -> [EventRecord] {
    try db.read { try EventRecord.order(EventRecord.Columns.id.desc).limit(limit).fetchAll($0) }
  }

  /// The chain of versions from `number` back to version 0 (newest first).
  public func lineage(_ number: Int) throws -> [VersionRecord] {
    var out: [VersionRecord] = []
    var n: Int? = number
    while let k = n, out.count <= 1_000_000 {
      let v = try version(k)
      out.append(v)
      n = v.parent
    }
    return out
  }
}
