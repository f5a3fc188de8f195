@testable import AgoraRounds
import AgoraModel
import AgoraRegistry
import AgoraStorage
import AgoraTensor
import AgoraTestSupport
import Foundation
import Testing

/// The coordinator keeps the outer optimizer's momentum on disk (`MomentumStream`); these hold it to the
/// in-memory optimizer bit for bit.
@Suite struct MomentumStreamTests {
  func tempDir() throws -> String { try temporaryDirectory("agora-momentum") }

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
    #expect(throws: StorageError.self) { try MomentumStream.step(outer: opt, delta: FloatBuffer(count: n), previous: dir + "/short", out: dir + "/out") }
  }
}
