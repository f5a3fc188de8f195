import AgoraStorage
import AgoraTestSupport
import Foundation
import Testing

/// Durable files: the O_DIRECT stream writes exactly the bytes given and reports failures of its writer thread;
/// atomic replacement leaves the old file or the new one, never a mix; exact reads name what is short.
@Suite struct StorageTests {
  func tempDir() throws -> String { try temporaryDirectory("agora-storage") }

  /// O_DIRECT writes whole aligned blocks: the last one is padded and the file cut back to its length.
  @Test(arguments: [0, 1, 4095, 4096, 4097, (4 << 20) + 3, (9 << 20) - 1])
  func directStreamWritesExactlyTheBytes(size: Int) throws {
    let dir = try tempDir()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
    var seen = 0
    try bytes.withUnsafeBytes { b in
      // In two parts, split off the block boundary, as a blob's header and parameters are.
      let cut = min(size, 1000)
      let file = try DirectFileStream(path: dir + "/f") { seen += $0.count }
      try file.append(UnsafeRawBufferPointer(rebasing: b[0..<cut]))
      try file.append(UnsafeRawBufferPointer(rebasing: b[cut...]))
      try file.finish()
    }
    #expect(seen == size)
    #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/f")) == Data(bytes))
  }

  /// A write that fails on the stream's writer thread is not lost: a later append or `finish` throws it
  /// (`/dev/full` refuses every write with ENOSPC).
  @Test func aFailedBackgroundWriteIsThrown() throws {
    let stream = try DirectFileStream(path: "/dev/full")
    let bytes = [UInt8](repeating: 1, count: 3 << 20)
    #expect(throws: StorageError.self) {
      try bytes.withUnsafeBytes { try stream.append($0) }
      try stream.finish()
    }
  }

  /// An atomic write replaces the file whole; one whose writer fails leaves the old file as it was and no
  /// temporary file behind.
  @Test func atomicWriteReplacesWholeOrNotAtAll() throws {
    let dir = try tempDir()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/config.json"
    try AtomicFile.write(Data("old".utf8), to: path)
    struct Interrupted: Error {}
    #expect(throws: StorageError.self) {
      try AtomicFile.write(to: path) { h in
        try h.write(contentsOf: Data("half of the ne".utf8))
        throw Interrupted()
      }
    }
    #expect(try String(contentsOfFile: path, encoding: .utf8) == "old")
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["config.json"])
    try AtomicFile.write(Data("new".utf8), to: path)
    #expect(try String(contentsOfFile: path, encoding: .utf8) == "new")
  }

  /// An exact read of a file that ends too soon says where it ended.
  @Test func anExactReadOfAShortFileSaysWhereItEnds() throws {
    let dir = try tempDir()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try Data(count: 100).write(to: URL(fileURLWithPath: dir + "/short"))
    let fd = open(dir + "/short", O_RDONLY)
    defer { close(fd) }
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
    defer { out.deallocate() }
    #expect(throws: StorageError(path: dir + "/short", problem: "ends at byte 100, expected 114")) { try Posix.read(fd, path: dir + "/short", at: 50, into: out) }
    #expect(throws: Never.self) { try Posix.read(fd, path: dir + "/short", at: 36, into: out) }
  }
}
