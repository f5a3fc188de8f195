import AgoraCrypto
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
      throw RegistryError.unreadableDatabase(path: path, reason: "\(error)")
    }
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
  /// (`DurableFile.writeAddressed`); with an unknown hash the same pass hashes them.
  @discardableResult
  public func writeBlob(parts: [UnsafeRawBufferPointer], hash known: [UInt8]? = nil) throws -> [UInt8] {
    try DurableFile.writeAddressed(parts: parts, in: blobDir, hash: known)
  }

  /// Makes a finished (fsynced) file a blob: hashes it, renames it to its hash (or removes it when that
  /// blob exists) and returns the hash. For blobs written as they are computed (the optimizer state).
  public func adoptBlob(_ tmp: String) throws -> [UInt8] {
    guard let hash = DurableFile.hash(of: tmp) else { throw RegistryError.io(path: tmp, problem: "cannot be read") }
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
    guard let digest = DurableFile.hash(of: path) else { return .missingBlob(hash: hash, path: path, what: what) }
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
        try Registry.insertEvent(db, "enrolled", n.fingerprint, "\(n.name) (\(n.institution)) as \(n.role)")
      } else if before!.status != n.status {
        try Registry.insertEvent(db, n.status, n.fingerprint, n.name)
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
      let langs = Set((try? JSONSerialization.jsonObject(with: Data(n.languages.utf8)) as? [String]) ?? []).union(c.tokensPerLanguage.keys)
      n.languages = jsonArray(Array(langs))
      n.role = c.role
      try n.update(db)
    }
  }

  /// Version 0 (made from the seed, no round).
  public func commitGenesis(_ v: VersionRecord) throws {
    try db.write { db in
      try v.insert(db)
      try Registry.insertEvent(db, "version", "0", "initial version from the seed, hash \(v.hash.prefix(16))")
    }
  }

  public func latestVersion() throws -> VersionRecord? {
    try db.read { try VersionRecord.order(Column("number").desc).fetchOne($0) }
  }

  public func versions() throws -> [VersionRecord] {
    try db.read { try VersionRecord.order(Column("number")).fetchAll($0) }
  }

  public func version(_ number: Int) throws -> VersionRecord {
    guard let v = try db.read({ try VersionRecord.fetchOne($0, key: number) }) else { throw RegistryError.notFound("no version \(number)") }
    return v
  }

  public func lastRound() throws -> Int {
    try db.read { try Int.fetchOne($0, sql: "SELECT MAX(number) FROM rounds") } ?? 0
  }

  public func rounds() throws -> [RoundRecord] {
    try db.read { try RoundRecord.order(Column("number")).fetchAll($0) }
  }

  public func contributions(round: Int? = nil) throws -> [ContributionRecord] {
    try db.read { db in
      if let round { return try ContributionRecord.filter(Column("round") == round).order(Column("node")).fetchAll(db) }
      return try ContributionRecord.order(Column("round"), Column("node")).fetchAll(db)
    }
  }

  public func nodes() throws -> [NodeRecord] {
    try db.read { try NodeRecord.order(Column("name")).fetchAll($0) }
  }

  public func events(limit: Int = 1000) throws -> [EventRecord] {
    try db.read { try EventRecord.order(Column("id").desc).limit(limit).fetchAll($0) }
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

/// Durable writes of large files: O_DIRECT, fsync, rename into place, fsync of the directory; and the
/// content-addressed files (named by their BLAKE2b-256) of the registry's blobs and the version patches.
public enum DurableFile {
  /// Writes the concatenation of `parts` as the file `dir/<BLAKE2b-256 hex>`, hashing it in the same pass
  /// unless the hash is `known`; a file of that name is kept as it is. Returns the hash.
  @discardableResult
  public static func writeAddressed(parts: [UnsafeRawBufferPointer], in dir: String, hash known: [UInt8]? = nil) throws -> [UInt8] {
    if let known, FileManager.default.fileExists(atPath: dir + "/" + hex(known)) { return known }
    let file = try AddressedWriter(in: dir, hashing: known == nil)
    do {
      for p in parts { try file.append(p) }
      return try file.finish(hash: known)
    } catch {
      file.abandon()
      throw error
    }
  }

  /// A content-addressed file written piece by piece (O_DIRECT, hashed as it goes): `finish` fsyncs it and
  /// renames it to `dir/<BLAKE2b-256 hex>`; until then it is a temporary file that `abandon` removes.
  public final class AddressedWriter {
    let dir: String, tmp: String
    let hasher: Sodium.Hasher?
    let stream: DirectFileStream

    public init(in dir: String, hashing: Bool = true) throws {
      self.dir = dir
      tmp = DurableFile.temporaryPath(in: dir, "incoming")
      let h = hashing ? Sodium.Hasher() : nil
      hasher = h
      stream = try DirectFileStream(path: tmp) { h?.update($0) }
    }

    public func append(_ bytes: UnsafeRawBufferPointer) throws { try stream.append(bytes) }

    /// Finishes the file and places it under its hash (`known`, or the one computed while writing).
    public func finish(hash known: [UInt8]? = nil) throws -> [UInt8] {
      try stream.finish()
      guard let hash = known ?? hasher?.finish() else { throw RegistryError.io(path: tmp, problem: "written without a hash") }
      try DurableFile.place(tmp, as: dir + "/" + hex(hash))
      return hash
    }

    public func abandon() { unlink(tmp) }
  }

  /// Renames a finished file to its content-addressed `path`, or removes it when that file exists.
  public static func place(_ tmp: String, as path: String) throws {
    if FileManager.default.fileExists(atPath: path) { unlink(tmp); return }
    try publish(tmp, as: path)
  }

  /// BLAKE2b-256 of a file's contents, read 4 MiB at a time; nil if it cannot be opened.
  public static func hash(of path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    let n = 1 << 22
    guard let buffer = PageMemory(bytes: n) else { return nil }
    let hasher = Sodium.Hasher()
    while true {
      let got = Glibc.read(fd, buffer.pointer, n)
      if got < 0 && errno == EINTR { continue }
      guard got >= 0 else { return nil }
      if got == 0 { break }
      hasher.update(UnsafeRawBufferPointer(start: buffer.pointer, count: got))
    }
    return hasher.finish()
  }

  /// Reads exactly `out.count` bytes of `fd` from `offset` (retrying short reads and EINTR); a file that ends
  /// sooner or a read error is `RegistryError.io` naming `path`.
  public static func read(_ fd: Int32, path: String, at offset: Int, into out: UnsafeMutableRawBufferPointer) throws {
    var got = 0
    while got < out.count {
      let r = pread(fd, out.baseAddress! + got, out.count - got, off_t(offset + got))
      if r < 0 && errno == EINTR { continue }
      guard r >= 0 else { throw RegistryError.io(path: path, problem: "cannot be read: \(String(cString: strerror(errno)))") }
      guard r > 0 else { throw RegistryError.io(path: path, problem: "ends at byte \(offset + got), expected \(offset + out.count)") }
      got += r
    }
  }

  /// Reads `count` octets of `path` from `offset` on a thread of its own and throws them away, so that the
  /// page cache holds them when they are read for real (`posix_fadvise(WILLNEED)` measured no faster than a
  /// cold read here). Failures are ignored: the real read reports them.
  public static func warm(_ path: String, offset: Int, count: Int) {
    Thread {
      let fd = open(path, O_RDONLY | O_CLOEXEC)
      guard fd >= 0, let buffer = PageMemory(bytes: 1 << 22) else { return }
      defer { close(fd) }
      var done = 0
      while done < count {
        let r = pread(fd, buffer.pointer, min(1 << 22, count - done), off_t(offset + done))
        if r < 0 && errno == EINTR { continue }
        guard r > 0 else { return }
        done += r
      }
    }.start()
  }

  /// A name in `dir` for a file being written (`removeTemporaryFiles` matches ".tmp-").
  public static func temporaryPath(in dir: String, _ what: String) -> String {
    dir + "/\(what).tmp-\(getpid())-\(UUID().uuidString.prefix(8))"
  }



  /// Renames a finished (fsynced) temporary file into place and fsyncs the directory.
  public static func publish(_ tmp: String, as path: String) throws {
    guard rename(tmp, path) == 0 else {
      unlink(tmp)
      throw RegistryError.io(path: tmp, problem: "cannot be renamed to \(path): \(String(cString: strerror(errno)))")
    }
    let dir = (path as NSString).deletingLastPathComponent
    let fd = open(dir.isEmpty ? "." : dir, O_RDONLY)
    if fd >= 0 { fsync(fd); close(fd) }
  }
}

/// A file written front to back through 1 MiB aligned buffers with O_DIRECT: the data goes from those
/// buffers to the device, never through the page cache, which spares the kernel's copy and the cache's
/// bookkeeping for files nobody reads soon (a version's weights, the optimizer state: tens or hundreds of MB
/// every round) and leaves the cache to what is read. Where the file system refuses O_DIRECT (tmpfs, some
/// network file systems) it writes buffered instead. Full buffers are written in order by a thread of the
/// stream's own while the caller fills the next one, so producing the bytes and the
/// device's writes overlap; a failed write is thrown by a later `append` or by `finish`. `finish` pads the
/// last block, cuts the file back to its length and fsyncs it; until then the file is incomplete (write it
/// under a temporary name).
public final class DirectFileStream {
  /// Bytes per direct write, and the alignment O_DIRECT asks of buffers, offsets and lengths.
  static let block = 1 << 20, align = 4096
  /// Buffers per stream: one being filled, one being written (measured: more do not help the coordinator's
  /// step here, whose writes are bound by the device, and each costs a MiB of memory).
  static let depth = 2
  /// O_DIRECT (Glibc exports it only under _GNU_SOURCE, which Swift's import does not set).
  #if arch(x86_64)
  static let O_DIRECT: Int32 = 0o40000
  #elseif arch(arm64)
  static let O_DIRECT: Int32 = 0o200000
  #else
  static let O_DIRECT: Int32 = 0  // buffered elsewhere
  #endif

  public let path: String
  let fd: Int32
  let direct: Bool
  /// Every buffer of the stream, and the one being filled.
  let memory: PageMemory
  let buffers: [UnsafeMutableRawPointer]
  var buffer: UnsafeMutableRawPointer
  var filled = 0
  public private(set) var length = 0
  let observe: (UnsafeRawBufferPointer) -> Void
  var closed = false
  let writer: Writer

  /// The thread that writes full buffers in the order they are handed over and gives them back.
  final class Writer: @unchecked Sendable {
    let fd: Int32
    let path: String
    let cond = NSCondition()
    var queue: [(UnsafeMutableRawPointer, Int)] = []
    var free: [UnsafeMutableRawPointer]
    var stopping = false
    var error: RegistryError? = nil

    init(fd: Int32, path: String, spare: [UnsafeMutableRawPointer]) {
      self.fd = fd
      self.path = path
      free = spare
      Thread { [self] in
        while true {
          cond.lock()
          while queue.isEmpty && !stopping { cond.wait() }
          guard let (p, n) = queue.first else { cond.unlock(); break }  // stopping, nothing left
          let failed = error != nil
          cond.unlock()
          let e = failed ? nil : DirectFileStream.write(fd, p, n, path: path)
          cond.lock()
          queue.removeFirst()
          free.append(p)
          if let e { error = e }
          cond.broadcast()
          cond.unlock()
        }
      }.start()
    }

    func submit(_ p: UnsafeMutableRawPointer, _ n: Int) {
      cond.lock()
      queue.append((p, n))
      cond.broadcast()
      cond.unlock()
    }

    /// A free buffer (waiting for a write to end if none is), or the failure of an earlier write.
    func take() throws -> UnsafeMutableRawPointer {
      cond.lock()
      defer { cond.unlock() }
      while free.isEmpty && error == nil { cond.wait() }
      if let error { throw error }
      return free.removeLast()
    }

    /// Waits until every buffer handed over is written, then ends the thread; returns the first failure.
    func stop() -> RegistryError? {
      cond.lock()
      defer { cond.unlock() }
      while !queue.isEmpty { cond.wait() }
      stopping = true
      cond.broadcast()
      return error
    }
  }

  public init(path: String, observe: @escaping (UnsafeRawBufferPointer) -> Void = { _ in }) throws {
    self.path = path
    self.observe = observe
    var d = true
    var f = open(path, O_WRONLY | O_CREAT | O_TRUNC | DirectFileStream.O_DIRECT | O_CLOEXEC, 0o644)
    if f < 0 && errno == EINVAL {
      d = false
      f = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    }
    guard f >= 0 else { throw RegistryError.io(path: path, problem: "cannot be created: \(String(cString: strerror(errno)))") }
    fd = f
    direct = d
    guard let m = PageMemory(bytes: DirectFileStream.depth * DirectFileStream.block) else {
      close(f)
      throw RegistryError.io(path: path, problem: "no memory for its write buffers")
    }
    memory = m
    buffers = (0..<DirectFileStream.depth).map { m.pointer + $0 * DirectFileStream.block }
    buffer = buffers[0]
    writer = Writer(fd: f, path: path, spare: Array(buffers.dropFirst()))
  }

  deinit {
    if !closed {
      _ = writer.stop()
      close(fd)
    }
  }

  public func append(_ bytes: UnsafeRawBufferPointer) throws {
    var off = 0
    while off < bytes.count {
      let n = min(DirectFileStream.block - filled, bytes.count - off)
      buffer.advanced(by: filled).copyMemory(from: bytes.baseAddress!.advanced(by: off), byteCount: n)
      filled += n
      off += n
      if filled == DirectFileStream.block { try handOver() }
    }
    length += bytes.count
  }

  /// Gives the full buffer to the writer and goes on with a free one.
  func handOver() throws {
    observe(UnsafeRawBufferPointer(start: buffer, count: filled))
    writer.submit(buffer, filled)
    filled = 0
    buffer = try writer.take()
  }

  /// Writes `n` bytes at `p` to `fd` (retrying short writes); nil on success.
  static func write(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int, path: String) -> RegistryError? {
    var done = 0
    while done < n {
      let w = Glibc.write(fd, p.advanced(by: done), n - done)
      if w < 0 && errno == EINTR { continue }
      guard w > 0 else { return RegistryError.io(path: path, problem: "cannot be written: \(String(cString: strerror(errno)))") }
      done += w
    }
    return nil
  }

  /// Writes what is buffered, sets the file's length and fsyncs it; the stream is closed afterwards.
  public func finish() throws {
    guard !closed else { return }
    closed = true
    defer { close(fd) }
    if let e = writer.stop() { throw e }
    if filled > 0 {
      observe(UnsafeRawBufferPointer(start: buffer, count: filled))
      // The last block is padded to the alignment and the file cut back to its length below.
      let a = DirectFileStream.align
      let n = direct ? (filled + a - 1) / a * a : filled
      if n > filled { buffer.advanced(by: filled).initializeMemory(as: UInt8.self, repeating: 0, count: n - filled) }
      if let e = DirectFileStream.write(fd, buffer, n, path: path) { throw e }
      filled = 0
    }
    guard ftruncate(fd, off_t(length)) == 0, fsync(fd) == 0 else {
      throw RegistryError.io(path: path, problem: "cannot be finished (truncate or fsync): \(String(cString: strerror(errno)))")
    }
  }
}

/// Anonymous memory mapped from the kernel and unmapped when released: page-aligned (as O_DIRECT wants)
/// and, unlike malloc'd blocks of this size, never left behind in the arena of one of the short-lived
/// threads that use it (the coordinator's persist and writer threads run every round; with malloc its
/// resident memory crept up by tens of MB over a dozen rounds).
final class PageMemory {
  let pointer: UnsafeMutableRawPointer
  let bytes: Int

  init?(bytes: Int) {
    guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else { return nil }
    pointer = p
    self.bytes = bytes
  }

  deinit { munmap(pointer, bytes) }
}
