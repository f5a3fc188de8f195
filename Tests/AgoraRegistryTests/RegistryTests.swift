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
}
