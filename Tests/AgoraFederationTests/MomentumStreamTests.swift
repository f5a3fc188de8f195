@testable import AgoraFederation
import AgoraModel
import AgoraRegistry
import AgoraTensor
import Foundation
import Testing

/// The coordinator keeps the outer optimizer's momentum on disk (`MomentumStream`); these hold it to the
/// in-memory optimizer bit for bit, and the O_DIRECT writer to exact file contents.
@Suite struct MomentumStreamTests {
  func tempDir() throws -> String {
    let d = NSTemporaryDirectory() + "agora-momentum-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
  }

  /// Three rounds of DiLoCo and FedAdam over a size that is not a multiple of the 4 MiB slice: the steps u
  /// and the state file equal the in-memory optimizer's u and m ‖ v exactly.
  @Test(arguments: [OuterOptimizer.Kind.diloco, .fedadam])
  func streamedStepEqualsInMemoryStep(kind: OuterOptimizer.Kind) throws {
    let dir = try tempDir()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let n = MomentumStream.sliceFloats * 2 + 12_345
    let memory = OuterOptimizer(kind: kind, count: n, lr: 0.7, momentum: 0.9)
    let streamed = OuterOptimizer(kind: kind, count: n, lr: 0.7, momentum: 0.9, momentumInMemory: false)
    #expect(streamed.m.count == 0)
    var previous: String? = nil
    var rng = SplitMix64(seed: UInt64(kind.rawValue.count))
    for round in 0..<3 {
      let a = FloatBuffer(count: n), b = FloatBuffer(count: n)
      for i in 0..<n { let x = Float(Int64(bitPattern: rng.next()) >> 40) * 1e-9; a.pointer[i] = x; b.pointer[i] = x }
      memory.step(a)
      let out = dir + "/state-\(round)"
      let written = try MomentumStream.step(outer: streamed, delta: b, previous: previous, out: out)
      #expect(written == memory.state.reduce(0) { $0 + $1.count * 4 })
      #expect(memcmp(a.pointer, b.pointer, n * 4) == 0, "round \(round): the steps u differ")
      let file = try Data(contentsOf: URL(fileURLWithPath: out))
      var expected = Data()
      for s in memory.state { expected.append(UnsafeBufferPointer(start: s.pointer, count: s.count)) }
      #expect(file == expected, "round \(round): the state file is not m ‖ v")
      previous = out
    }
  }

  /// A state file shorter than the model is an error naming the file, not zeros.
  @Test func truncatedStateFileIsAnError() throws {
    let dir = try tempDir()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let n = 10_000
    try Data(count: n * 4 - 8).write(to: URL(fileURLWithPath: dir + "/short"))
    let opt = OuterOptimizer(kind: .diloco, count: n, lr: 0.7, momentum: 0.9, momentumInMemory: false)
    #expect(throws: RegistryError.self) { try MomentumStream.step(outer: opt, delta: FloatBuffer(count: n), previous: dir + "/short", out: dir + "/out") }
  }

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
    #expect(throws: RegistryError.self) {
      try bytes.withUnsafeBytes { try stream.append($0) }
      try stream.finish()
    }
  }
}
