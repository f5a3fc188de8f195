import AgoraRounds
import AgoraModel
import AgoraTensor
import AgoraTestSupport
import AgoraWire
import Foundation
import Testing

/// 4-bit update payloads (AGDQ formats 2 int4 and 3 fp4, SPEC §6.2), read here by a decoder written from the
/// SPEC's text alone, independent of DeltaCodec and its kernels.
@Suite struct FourBitCodecTests {
  static let fp4: [Float] = [0, 0x1p-6, 0x1p-5, 0x1p-4, 0x1p-3, 0x1p-2, 0x1p-1, 1]
  static let int4: [Float] = [0, 1, 2, 3, 4, 5, 6, 7]

  /// SPEC §6.2's reading of a 4-bit payload: header, then per block a scale and ⌈m/2⌉ octets, low nibble first.
  func reference(_ bytes: [UInt8], count: Int, format: DeltaFormat) -> [Float]? {
    guard bytes.count >= 16, Array(bytes[0..<4]) == Array("AGDQ".utf8), bytes[4] == format.rawValue else { return nil }
    let table = format == .int4 ? Self.int4 : Self.fp4
    var out: [Float] = [], at = 16
    while out.count < count {
      let m = min(256, count - out.count)
      guard at + 4 + (m + 1) / 2 <= bytes.count else { return nil }
      let scale = Float(bitPattern: UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24)
      for k in 0..<m {
        let octet = bytes[at + 4 + k / 2]
        let code = k % 2 == 0 ? octet & 0xF : octet >> 4
        out.append((code & 8 != 0 ? -1 : 1) * scale * table[Int(code & 7)])
      }
      at += 4 + (m + 1) / 2
    }
    return at == bytes.count ? out : nil
  }

  func delta(_ n: Int, seed: UInt64) -> [Float] {
    var g = seed
    return (0..<n).map { i -> Float in
      g = g &* 6364136223846793005 &+ 1442695040888963407
      let u = Float(Int64(bitPattern: g) >> 40) / Float(1 << 23)  // in [-1, 1)
      return u * u * u * Float(1 + i % 5) * 1e-3                 // heavy near zero, as updates are
    }
  }

  @Test(arguments: [DeltaFormat.int4, .fp4], [1, 255, 257, 70_001])
  func roundsEachValueToTheNearestLevelOfItsBlock(format: DeltaFormat, count: Int) throws {
    let x = delta(count, seed: UInt64(count))
    let bytes = x.withUnsafeBufferPointer { DeltaCodec.encode($0, format: format) }
    let blocks = (count + 255) / 256, last = count - (blocks - 1) * 256
    #expect(bytes.count == 16 + (blocks - 1) * 132 + 4 + (last + 1) / 2)
    #expect(bytes.count == DeltaCodec.encodedSize(count: count, format: format))
    let decoded = try #require(reference(bytes, count: count, format: format))
    var out = [Float](repeating: 0, count: count)
    try bytes.withUnsafeBytes { try DeltaCodec.decode($0, into: &out, count: count, mode: .store) }
    #expect(out == decoded)
    // Each value is the nearest of its block's 15 levels (scale from the block's largest magnitude).
    let table = format == .int4 ? Self.int4 : Self.fp4
    var worst: Float = 0
    for b in 0..<blocks {
      let slice = x[(b * 256)..<min(count, (b + 1) * 256)]
      let top = slice.map { abs($0) }.max()!
      let scale = format == .int4 ? top / 7 : top
      let levels = table.flatMap { [scale * $0, -scale * $0] }
      for i in slice.indices {
        let best = levels.map { abs($0 - x[i]) }.min()!
        worst = max(worst, abs(decoded[i] - x[i]) - best)
      }
    }
    #expect(worst <= 1e-9, "a value was not rounded to its nearest level (by \(worst))")
    // The norm the coordinator checks is the decoded vector's.
    let (f, sq) = try bytes.withUnsafeBytes { try DeltaCodec.validate($0, count: count) }
    #expect(f == format)
    let expected = decoded.reduce(0.0) { $0 + Double($1) * Double($1) }
    #expect(abs(sq - expected) <= 1e-6 * max(1e-12, expected))
    // Subtracting and adding with a weight decode the same values.
    var base = x
    try bytes.withUnsafeBytes { try DeltaCodec.decode($0, into: &base, count: count, mode: .subtract) }
    #expect(zip(base, zip(x, decoded)).allSatisfy { $0 == $1.0 - $1.1 })
    var sum = [Float](repeating: 1, count: count)
    try bytes.withUnsafeBytes { try DeltaCodec.decode($0, into: &sum, count: count, mode: .add(0.5)) }
    #expect(zip(sum, decoded).allSatisfy { $0 == 1 + 0.5 * $1 })
  }

  /// Error feedback: what rounding loses is carried into the next update, so over T updates of the same Δ the
  /// decoded sum is T·Δ minus only what is still held back (bounded by one block's rounding).
  @Test(arguments: [DeltaFormat.int4, .fp4])
  func errorFeedbackLosesNothingOverRounds(format: DeltaFormat) throws {
    let n = 5_000, rounds = 40
    let x = delta(n, seed: 3)
    var feedback = [Float](repeating: 0, count: n)
    var total = [Double](repeating: 0, count: n)
    for _ in 0..<rounds {
      let bytes = x.withUnsafeBufferPointer { xb in feedback.withUnsafeMutableBufferPointer { DeltaCodec.encode(xb, format: format, errorFeedback: $0) } }
      let decoded = try #require(reference(bytes, count: n, format: format))
      for i in 0..<n { total[i] += Double(decoded[i]) }
    }
    let top = x.map { abs($0) }.max()!
    var worst = 0.0, worstAlone = 0.0
    for i in 0..<n {
      // Σ decoded + feedback = T·x exactly up to float rounding.
      worst = max(worst, abs(total[i] + Double(feedback[i]) - Double(rounds) * Double(x[i])))
      worstAlone = max(worstAlone, abs(total[i] / Double(rounds) - Double(x[i])))
    }
    #expect(worst <= 1e-4 * Double(top) * Double(rounds))
    // The mean of the decoded updates is far closer to Δ than one update's rounding (scale/2 for int4, up to
    // half the top magnitude for fp4).
    #expect(worstAlone <= Double(top) / 8, "mean decoded update off by \(worstAlone) (top \(top))")
  }

  @Test(arguments: [DeltaFormat.int4, .fp4])
  func badPayloadsAreTypedErrors(format: DeltaFormat) throws {
    var x = delta(600, seed: 5)
    x[300] = .nan
    let bytes = x.withUnsafeBufferPointer { DeltaCodec.encode($0, format: format) }
    #expect(throws: DeltaError.nonFinite(index: 256)) { _ = try bytes.withUnsafeBytes { try DeltaCodec.validate($0, count: 600) } }
    let good = delta(600, seed: 5).withUnsafeBufferPointer { DeltaCodec.encode($0, format: format) }
    #expect(throws: DeltaError.length(got: good.count - 1, expected: good.count)) {
      _ = try Array(good.dropLast()).withUnsafeBytes { try DeltaCodec.validate($0, count: 600) }
    }
    var unknown = good
    unknown[4] = 4
    #expect(throws: DeltaError.header("unknown format 4")) { _ = try unknown.withUnsafeBytes { try DeltaCodec.validate($0, count: 600) } }
    // A negative scale is refused too (the encoder never writes one).
    var negative = good
    negative[16 + 132 + 3] |= 0x80
    #expect(throws: DeltaError.nonFinite(index: 256)) { _ = try negative.withUnsafeBytes { try DeltaCodec.validate($0, count: 600) } }
  }

  /// Protocol/vectors/payloads.json's 4-bit payloads, read by the SPEC's reader, are its decoded values.
  @Test func vectorsDecodeBySpec() throws {
    let text = try String(contentsOfFile: repoRoot + "/Protocol/vectors/payloads.json", encoding: .utf8)
    let v = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
    let n = v["count"] as! Int
    for (format, key) in [(DeltaFormat.int4, "int4"), (.fp4, "fp4")] {
      let bytes = try #require(unhex(v[key + "_payload"] as! String))
      let decoded = try #require(reference(bytes, count: n, format: format))
      #expect(decoded == (v[key + "_decoded"] as! [NSNumber]).map(\.floatValue))
    }
  }

  /// A 4-bit version patch made slice by slice (as the coordinator streams it) is the whole payload's bytes, and
  /// applied slice by slice it gives what decoding the whole payload gives; the rounding error stays behind in
  /// the residual, so two steps together lose only the last one's.
  @Test func aFourBitPatchMadeSliceBySliceIsTheWholePayload() throws {
    let n = 70_001, slice = 64 * DeltaCodec.block
    var g = SplitMix64(seed: 9)
    let u = (0..<n).map { _ in Float.random(in: -0.01..<0.01, using: &g) }
    let whole = FloatBuffer(count: n), sliced = FloatBuffer(count: n)
    let wholePayload = u.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .int4, errorFeedback: whole.buffer) }
    var bytes = DeltaCodec.header(count: n, format: .int4)
    let out = UnsafeMutableRawPointer.allocate(byteCount: DeltaCodec.patchBytes(values: 0..<slice, count: n, format: .int4), alignment: 64)
    defer { out.deallocate() }
    let theta = FloatBuffer(count: n)
    for start in stride(from: 0, to: n, by: slice) {
      let r = start..<min(n, start + slice)
      let k = u.withUnsafeBufferPointer { DeltaCodec.encodePatch($0, values: r, format: .int4, into: out, errorFeedback: sliced.buffer) }
      #expect(k == DeltaCodec.patchBytes(values: r, count: n, format: .int4))
      bytes += Array(UnsafeRawBufferPointer(start: out, count: k))
      try DeltaCodec.applyPatch(out, values: r, count: n, format: .int4, into: theta.pointer, mode: .subtract)
    }
    #expect(bytes == wholePayload)
    #expect(Array(sliced.buffer) == Array(whole.buffer))
    var decoded = [Float](repeating: 0, count: n)
    try wholePayload.withUnsafeBytes { try DeltaCodec.decode($0, into: &decoded, count: n, mode: .store) }
    #expect((0..<n).allSatisfy { theta.pointer[$0] == -decoded[$0] })
    // u = decoded + residual, value by value (up to binary32 rounding).
    #expect((0..<n).allSatisfy { abs(u[$0] - decoded[$0] - sliced.pointer[$0]) < 1e-8 })
  }
}
