@testable import AgoraRounds
@testable import AgoraCoordinator
import AgoraTensor
import Foundation
import Testing

/// The coordinator's staging buffer cut into slots (`rounds.concurrent_uploads`): each streaming upload is
/// decrypted into its own slot, interleaved chunks never mix, and the memory stays the one buffer.
@Suite struct StagingTests {
  @Test func interleavedUploadsLandInTheirOwnSlots() throws {
    let params = FloatBuffer(count: 10_000, leading: DeltaCodec.headerBytes)
    let staging = UpdateStaging(params: params, header: 64)
    defer { staging.deallocate() }
    let int8 = DeltaCodec.encodedSize(count: params.count, format: .int8)
    #expect(staging.configure(uploads: 8, payloadBytes: int8) == 3, "an fp32 update's buffer holds three int8 payloads")
    #expect(staging.configure(uploads: 2, payloadBytes: DeltaCodec.encodedSize(count: params.count, format: .fp32)) == 1)
    #expect(staging.configure(uploads: 3, payloadBytes: int8) == 3)
    for n in ["a", "b", "c"] { staging.begin(node: n) }
    // Chunks of 1,000 bytes, the nodes taking turns; each node's bytes are its own letter.
    for _ in 0..<5 {
      for n in ["a", "b", "c"] {
        let d = try #require(staging.place(node: n, 1000, blob: { nil }, log: { _ in }))
        d.initializeMemory(as: UInt8.self, repeating: n.utf8.first!)
        try staging.take(node: n, UnsafeRawBufferPointer(d))
      }
    }
    for n in ["a", "b", "c"] {
      let p = staging.payload(node: n)
      #expect(p.count == 5000 && p.allSatisfy { $0 == n.utf8.first! }, "\(n)")
    }
    // No slot for a fourth; a chunk decrypted elsewhere is refused.
    staging.begin(node: "d")
    #expect(staging.place(node: "d", 1000, blob: { nil }, log: { _ in }) == nil)
    let elsewhere = UnsafeMutableRawBufferPointer.allocate(byteCount: 1000, alignment: 64)
    defer { elsewhere.deallocate() }
    #expect(throws: DeltaError.self) { try staging.take(node: "a", UnsafeRawBufferPointer(elsewhere)) }
    // A payload longer than its slot does not fit.
    #expect(staging.place(node: "a", int8, blob: { nil }, log: { _ in }) == nil)
    // b is done: its slot goes to d, empty; a and c are untouched.
    staging.end(node: "b")
    staging.begin(node: "d")
    #expect(staging.payload(node: "d").count == 0 && staging.payload(node: "b").count == 0)
    let d = try #require(staging.place(node: "d", 10, blob: { nil }, log: { _ in }))
    d.initializeMemory(as: UInt8.self, repeating: 0x64)
    try staging.take(node: "d", UnsafeRawBufferPointer(d))
    #expect(staging.payload(node: "a").allSatisfy { $0 == 0x61 } && staging.payload(node: "c").allSatisfy { $0 == 0x63 })
  }
}
