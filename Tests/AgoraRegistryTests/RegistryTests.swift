import AgoraRegistry
import AgoraTestSupport
import AgoraWire
import Foundation
import Testing

@Suite struct RegistryTests {
  /// A data directory that is not what it should be stops the coordinator with an error naming the file and
  /// what to do; nothing is deleted.
  @Test func missingOrCorruptRegistryIsAClearErrorAndNothingIsDeleted() throws {
    let dir = NSTemporaryDirectory() + "agora-registry-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try FileManager.default.createDirectory(atPath: dir + "/blobs", withIntermediateDirectories: true)
    try Data("precious".utf8).write(to: URL(fileURLWithPath: dir + "/blobs/0123"))
    #expect(throws: RegistryError.missingDatabase(dataDir: dir)) { _ = try Registry(dataDir: dir, federation: "f", create: true) }
    #expect(FileManager.default.fileExists(atPath: dir + "/blobs/0123"))
    try Data("not a database at all, just text".utf8).write(to: URL(fileURLWithPath: dir + "/registry.sqlite"))
    #expect(throws: RegistryError.unreadableDatabase(path: dir + "/registry.sqlite", reason: "not an SQLite database")) {
      _ = try Registry(dataDir: dir, federation: "f", create: true)
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/registry.sqlite")) == Data("not a database at all, just text".utf8))
    try FileManager.default.removeItem(atPath: dir + "/registry.sqlite")
    try FileManager.default.removeItem(atPath: dir + "/blobs/0123")
    // Another federation's registry is refused.
    _ = try Registry(dataDir: dir, federation: "alpha", create: true)
    #expect(throws: RegistryError.wrongFederation(path: dir + "/registry.sqlite", expected: "beta", found: "alpha")) {
      _ = try Registry(dataDir: dir, federation: "beta", create: true)
    }
    // The event log is append-only.
    let store = try Registry(dataDir: dir, federation: "alpha", create: false)
    try store.record(event: "test", subject: "x", detail: "y")
    #expect(throws: (any Error).self) { try store.tamperWithEventsForTesting() }
    #expect(try store.events().count == 1)
    // A blob that does not hash to its name is refused when read.
    let hash = try [UInt8](repeating: 7, count: 64).withUnsafeBytes { try store.writeBlob($0) }
    try Data([1, 2, 3]).write(to: URL(fileURLWithPath: store.blobPath(hash)))
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
    defer { out.deallocate() }
    #expect(throws: RegistryError.self) { try store.readBlob(hex(hash), into: out, what: "test") }
  }

  /// A registry on a full disk at start-up is reported as a full disk, not as a corrupt registry to restore from a
  /// backup (issue 31, probe 7): SQLite cannot make its -wal and -shm files there and says "disk I/O error". The
  /// full disk is a real one: a tmpfs of 1 MiB, mounted here (the tests run as root), filled to the last octet.
  @Test func aFullDiskAtStartIsSaidToBeFullAndTheRegistryIsKept() throws {
    let dir = NSTemporaryDirectory() + "agora-full-\(UUID().uuidString)"
    let small = dir + "/small"
    try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
    defer { _ = shell("umount \(small)"); try? FileManager.default.removeItem(atPath: dir) }
    // A registry made elsewhere, then copied onto the small disk, which is then filled.
    do { let r = try Registry(dataDir: dir + "/made", federation: "f", create: true); try r.record(event: "test", subject: "x", detail: "kept") }
    try #require(shell("mount -t tmpfs -o size=1m tmpfs \(small)") == 0, "mounting a tmpfs needs root")
    try FileManager.default.createDirectory(atPath: small + "/data/blobs", withIntermediateDirectories: true)
    for f in try FileManager.default.contentsOfDirectory(atPath: dir + "/made") where f.hasPrefix("registry.sqlite") && !f.hasSuffix("-shm") {
      try FileManager.default.copyItem(atPath: dir + "/made/" + f, toPath: small + "/data/" + f)
    }
    let before = try Data(contentsOf: URL(fileURLWithPath: small + "/data/registry.sqlite"))
    _ = shell("dd if=/dev/zero of=\(small)/filler bs=4096 2>/dev/null; dd if=/dev/zero of=\(small)/filler2 bs=1 2>/dev/null")
    do {
      _ = try Registry(dataDir: small + "/data", federation: "f", create: true)
      Issue.record("the registry opened on a full disk")
    } catch let e as RegistryError {
      guard case .diskFull(let path, let free, _) = e else { Issue.record("not a full disk: \(e)"); return }
      #expect(path == small + "/data/registry.sqlite" && free < 4096, "\(e)")
      #expect(e.description.contains("the disk is full") && !e.description.contains("backup"), "\(e)")
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: small + "/data/registry.sqlite")) == before, "the registry is untouched")
    // With room again it opens, and what it held is there.
    try FileManager.default.removeItem(atPath: small + "/filler")
    let r = try Registry(dataDir: small + "/data", federation: "f", create: false)
    #expect(try r.events().contains { $0.detail == "kept" })
  }
}

/// Runs `command` with /bin/sh; its exit status.
@discardableResult
func shell(_ command: String) -> Int32 {
  let p = Process()
  p.executableURL = URL(fileURLWithPath: "/bin/sh")
  p.arguments = ["-c", command]
  do { try p.run() } catch { return -1 }
  p.waitUntilExit()
  return p.terminationStatus
}

/// Declarations as the registry keeps them: appended, never changed; a node's current one recorded once; the
/// ones in effect in a round are the last before it began and every one recorded while it ran.
@Suite struct DeclarationRecordTests {
  func record(_ node: String, _ hash: String, at t: Double) -> DeclarationRecord {
    DeclarationRecord(node: node, name: node, role: "institution", hash: hash, json: "{}", signature: "", signKey: "", recordedAt: t)
  }

  @Test func declarationsAreAppendedOnceAndNeverChanged() throws {
    let dir = try temporaryDirectory("agora-registry-declarations")
    let store = try Registry(dataDir: dir, federation: "alpha", create: true)
    #expect(try store.record(declaration: record("a", "h1", at: 1)))
    #expect(try !store.record(declaration: record("a", "h1", at: 2)), "the same declaration again (a new session) is not a new one")
    #expect(try store.record(declaration: record("b", "h1", at: 2)))
    #expect(try store.record(declaration: record("a", "h2", at: 5)))
    #expect(try store.declarations(node: "a").map(\.hash) == ["h1", "h2"])
    #expect(throws: (any Error).self) { try store.tamperWithDeclarationsForTesting() }
    #expect(try store.declarations().allSatisfy { $0.json == "{}" } && store.declarations().count == 3)
    #expect(try store.events().filter { $0.kind == "declaration" }.count == 3)
  }

  @Test func theDeclarationsInEffectDuringARound() {
    let all = [record("a", "h1", at: 1), record("a", "h2", at: 5), record("a", "h3", at: 5.5)]
    #expect(Registry.inEffect(all, from: 2, to: 3).map(\.hash) == ["h1"])
    #expect(Registry.inEffect(all, from: 4, to: 6).map(\.hash) == ["h1", "h2", "h3"], "changed while the round ran: both")
    #expect(Registry.inEffect(all, from: 6, to: 9).map(\.hash) == ["h3"])
    #expect(Registry.inEffect(all, from: 0, to: 0.5).isEmpty)
  }
}
