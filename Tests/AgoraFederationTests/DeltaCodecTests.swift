import AgoraTensor
import Testing
@testable import AgoraFederation

@Suite struct DeltaCodecTests {
  func delta(_ n: Int) -> [Float] {
    var g = UInt64(7)
    return (0..<n).map { i -> Float in
      g = g &* 6364136223846793005 &+ 1442695040888963407
      let u = Float(Int64(bitPattern: g) >> 40) / Float(1 << 23)  // in [-1, 1)
      return u * Float(1 + i % 7) * 1e-3
    }
  }

  /// Feeds `bytes` to a decoder in pieces of awkward sizes, as chunks arrive.
  func decode(_ bytes: [UInt8], count: Int, piece: Int) throws -> [Float] {
    let out = FloatBuffer(count: count)
    var d = DeltaDecoder(into: out.pointer, capacity: count)
    var i = 0
    while i < bytes.count { try d.feed(Array(bytes[i..<min(bytes.count, i + piece)])); i += piece }
    try d.finish()
    return out.array
  }

  @Test(arguments: [1, 3, 257, 4096])
  func fp32RoundTripsExactly(piece: Int) throws {
    let x = delta(1000)
    let bytes = x.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .fp32) }
    #expect(bytes.count == DeltaCodec.encodedSize(count: 1000, format: .fp32))
    #expect(try decode(bytes, count: 1000, piece: piece) == x)
  }

  @Test func int8IsAboutFourTimesSmallerAndErrorFeedbackCarriesTheRest() throws {
    let n = 5000
    let x = delta(n)
    var feedback = [Float](repeating: 0, count: n)
    let bytes = x.withUnsafeBufferPointer { xs in feedback.withUnsafeMutableBufferPointer { DeltaCodec.encode(xs, format: .int8, errorFeedback: $0) } }
    #expect(bytes.count == DeltaCodec.encodedSize(count: n, format: .int8))
    #expect(Double(DeltaCodec.encodedSize(count: n, format: .fp32)) / Double(bytes.count) > 3.8)
    let y = try decode(bytes, count: n, piece: 333)
    // Per block the error is at most half a quantisation step, and the feedback holds exactly what was lost.
    for i in 0..<n {
      #expect(abs((y[i] + feedback[i]) - x[i]) <= 1e-6 * max(1, abs(x[i])))
    }
    let maxAbs = x.map(abs).max()!
    #expect(y.indices.allSatisfy { abs(y[$0] - x[$0]) <= maxAbs / 127 })
  }

  @Test func badPayloadsAreTypedErrors() throws {
    let x = delta(300)
    let fp = x.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .fp32) }
    #expect(throws: DeltaDecoder.Failure.header("holds 300 values, the model has 299")) { _ = try decode(fp, count: 299, piece: 64) }
    #expect(throws: DeltaDecoder.Failure.incomplete(got: 299, expected: 300)) { _ = try decode(Array(fp.dropLast(4)), count: 300, piece: 64) }
    #expect(throws: DeltaDecoder.Failure.overflow) { _ = try decode(fp + [0, 0, 0, 0], count: 300, piece: 64) }
    var nan = fp
    nan.replaceSubrange(16..<20, with: [0x00, 0x00, 0xC0, 0x7F])
    #expect(throws: DeltaDecoder.Failure.nonFinite(index: 0)) { _ = try decode(nan, count: 300, piece: 64) }
    var magic = fp
    magic[0] = 0
    #expect(throws: DeltaDecoder.Failure.header("bad magic")) { _ = try decode(magic, count: 300, piece: 64) }
  }
}
