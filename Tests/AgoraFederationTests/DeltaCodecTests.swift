import AgoraCrypto
import AgoraModel
@testable import AgoraRounds
import AgoraTensor
import AgoraTestSupport
import AgoraWire
import Foundation
import Testing

@Suite struct DeltaCodecTests {
  func delta(_ n: Int, seed: UInt64 = 7) -> [Float] {
    var g = seed
    return (0..<n).map { i -> Float in
      g = g &* 6364136223846793005 &+ 1442695040888963407
      let u = Float(Int64(bitPattern: g) >> 40) / Float(1 << 23)  // in [-1, 1)
      return u * Float(1 + i % 7) * 1e-3
    }
  }

  func decode(_ bytes: [UInt8], count: Int, mode: DeltaCodec.Mode = .store, into start: [Float]? = nil) throws -> [Float] {
    let out = FloatBuffer(start ?? [Float](repeating: 0, count: count))
    try bytes.withUnsafeBytes { try DeltaCodec.decode($0, into: out.pointer, count: count, mode: mode) }
    return out.array
  }

  @Test(arguments: [1, 1000, 70_001])
  func fp32RoundTripsExactly(count: Int) throws {
    let x = delta(count)
    let bytes = x.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .fp32) }
    #expect(bytes.count == DeltaCodec.encodedSize(count: count, format: .fp32))
    #expect(try decode(bytes, count: count) == x)
    let (format, sq) = try bytes.withUnsafeBytes { try DeltaCodec.validate($0, count: count) }
    #expect(format == .fp32)
    let expected = x.reduce(0.0) { $0 + Double($1 * $1) }
    #expect(abs(sq - expected) <= 1e-9 * max(1, expected))
  }

  /// The coordinator encodes and applies a patch slice by slice while it is computed: the header and each
  /// range's blocks (`encodeInt8`) must be the bytes of encoding it at once, with both roundings and a short
  /// last block, and applying them range by range (`applyInt8`) must give the values of decoding it whole.
  @Test(arguments: [DeltaCodec.Rounding.nearest, .stochastic(seed: 9)])
  func rangesGiveTheBytesOfTheWhole(rounding: DeltaCodec.Rounding) throws {
    let n = 5 * 1024 + 77
    let x = delta(n, seed: 3)
    let whole = x.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .int8, rounding: rounding) }
    let cuts = [0, 1024, 1280, 4096, n]
    var parts = DeltaCodec.header(count: n, format: .int8)
    var pieces: [[UInt8]] = []
    for (a, b) in zip(cuts, cuts.dropFirst()) {
      var piece = [UInt8](repeating: 0xEE, count: DeltaCodec.int8Bytes(values: a..<b, count: n))
      let written = x.withUnsafeBufferPointer { xs in
        piece.withUnsafeMutableBytes { DeltaCodec.encodeInt8(xs, values: a..<b, into: $0.baseAddress!, rounding: rounding, threads: a % 2 + 1) }
      }
      #expect(written == piece.count)
      parts += piece
      pieces.append(piece)
    }
    #expect(parts == whole)
    let base = delta(n, seed: 11)
    let all = try decode(whole, count: n, mode: .subtract, into: base)
    let byRange = FloatBuffer(base)
    for ((a, b), piece) in zip(zip(cuts, cuts.dropFirst()), pieces) {
      try piece.withUnsafeBytes { try DeltaCodec.applyInt8($0.baseAddress!, values: a..<b, count: n, into: byRange.pointer, mode: .subtract) }
    }
    #expect(byRange.array == all)
    #expect(throws: DeltaError.self) {
      try pieces[0].withUnsafeBytes { try DeltaCodec.applyInt8($0.baseAddress!, values: 100..<300, count: n, into: byRange.pointer, mode: .store) }
    }
  }

  @Test func int8IsAboutFourTimesSmallerAndErrorFeedbackCarriesTheRest() throws {
    let n = 5000
    let x = delta(n)
    var feedback = [Float](repeating: 0, count: n)
    let bytes = x.withUnsafeBufferPointer { xs in feedback.withUnsafeMutableBufferPointer { DeltaCodec.encode(xs, format: .int8, errorFeedback: $0) } }
    #expect(bytes.count == DeltaCodec.encodedSize(count: n, format: .int8))
    #expect(Double(DeltaCodec.encodedSize(count: n, format: .fp32)) / Double(bytes.count) > 3.8)
    let y = try decode(bytes, count: n)
    // Per block the error is at most half a quantisation step, and the feedback holds exactly what was lost.
    for i in 0..<n {
      #expect(abs((y[i] + feedback[i]) - x[i]) <= 1e-6 * max(1, abs(x[i])))
    }
    let maxAbs = x.map(abs).max()!
    #expect(y.indices.allSatisfy { abs(y[$0] - x[$0]) <= maxAbs / 127 })
    // validate's norm is the norm of what decode gives.
    let sq = try bytes.withUnsafeBytes { try DeltaCodec.validate($0, count: n).1 }
    let decoded = y.reduce(0.0) { $0 + Double($1) * Double($1) }
    #expect(abs(sq - decoded) <= 1e-6 * decoded)
  }

  @Test func addAndSubtractModesFoldIntoTheTarget() throws {
    let n = 1000
    let x = delta(n), base = delta(n, seed: 99)
    let bytes = x.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .fp32) }
    let added = try decode(bytes, count: n, mode: .add(3), into: base)
    let subtracted = try decode(bytes, count: n, mode: .subtract, into: base)
    for i in 0..<n {
      #expect(added[i] == base[i] + 3 * x[i])
      #expect(subtracted[i] == base[i] - x[i])
    }
  }

  /// A version patch is rounded stochastically: the same seed gives the same bytes (the coordinator and every
  /// node agree), different seeds differ, and on average the patch is the step itself (no bias, even for
  /// values far below the block's largest, which rounding to nearest would always send as zero).
  @Test func stochasticRoundingIsDeterministicAndUnbiased() throws {
    let n = 512
    var x = [Float](repeating: 0.003, count: n)
    x[0] = 1  // scale 1/127: 0.003 is 0.38 of a step
    for i in 1..<n where i % 3 == 0 { x[i] = -0.0051 }
    let enc = { (seed: UInt64) in x.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .int8, rounding: .stochastic(seed: seed)) } }
    #expect(enc(5) == enc(5))
    #expect(enc(5) != enc(6))
    let nearest = try decode(x.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .int8) }, count: n)
    #expect(nearest[1] == 0, "to nearest, a value under half a step is lost")
    var mean = [Double](repeating: 0, count: n)
    let trials = 400
    for s in 0..<trials {
      let y = try decode(enc(UInt64(s)), count: n)
      for i in 0..<n { mean[i] += Double(y[i]) / Double(trials) }
      #expect(y.indices.allSatisfy { abs(y[$0] - x[$0]) <= 1 / 127 + 1e-6 }, "each value within one step")
    }
    let positive = (1..<n).filter { $0 % 3 != 0 }, negative = (1..<n).filter { $0 % 3 == 0 }
    let avgPositive: Double = positive.map { mean[$0] }.reduce(0, +) / Double(positive.count)
    let avgNegative: Double = negative.map { mean[$0] }.reduce(0, +) / Double(negative.count)
    #expect(abs(avgPositive - 0.003) < 0.0002, "mean \(avgPositive)")
    #expect(abs(avgNegative + 0.0051) < 0.0002, "mean \(avgNegative)")
    #expect(abs(mean[0] - 1) < 1e-9, "the block maximum is exact")
  }

  @Test func badPayloadsAreTypedErrorsAndLeaveTheTargetAlone() throws {
    let x = delta(300)
    let fp = x.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .fp32) }
    let keep = [Float](repeating: 5, count: 300)
    #expect(throws: DeltaError.header("holds 300 values, the model has 299")) { _ = try decode(fp, count: 299) }
    #expect(throws: DeltaError.length(got: fp.count - 4, expected: fp.count)) { _ = try decode(Array(fp.dropLast(4)), count: 300) }
    #expect(throws: DeltaError.length(got: fp.count + 4, expected: fp.count)) { _ = try decode(fp + [0, 0, 0, 0], count: 300) }
    #expect(throws: DeltaError.length(got: 5, expected: 16)) { _ = try decode(Array(fp.prefix(5)), count: 300) }
    var nan = fp
    nan.replaceSubrange(16..<20, with: [0x00, 0x00, 0xC0, 0x7F])
    #expect(throws: DeltaError.nonFinite(index: 0)) { _ = try nan.withUnsafeBytes { try DeltaCodec.validate($0, count: 300) } }
    var magic = fp
    magic[0] = 0
    let target = FloatBuffer(keep)
    #expect(throws: DeltaError.header("bad magic")) { try magic.withUnsafeBytes { try DeltaCodec.decode($0, into: target.pointer, count: 300, mode: .subtract) } }
    #expect(target.array == keep, "a refused header writes nothing")
    var reserved = fp
    reserved[6] = 1
    #expect(throws: DeltaError.header("reserved octets are not zero")) { _ = try decode(reserved, count: 300) }
    var format = fp
    format[4] = 9
    #expect(throws: DeltaError.header("unknown format 9")) { _ = try decode(format, count: 300) }
    // An int8 block whose scale is infinite.
    var q = x.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .int8) }
    q.replaceSubrange((16 + 260)..<(16 + 264), with: [0x00, 0x00, 0x80, 0x7F])
    #expect(throws: DeltaError.nonFinite(index: 256)) { _ = try q.withUnsafeBytes { try DeltaCodec.validate($0, count: 300) } }
  }

  /// A payload made on demand from a seed (the benchmark's streamed senders): any range of it is the same octets
  /// as the whole made at once, the whole is a valid payload of its format that decodes to finite values within
  /// the amplitude, not all zero, and another seed gives another payload.
  @Test(arguments: [(DeltaFormat.int8, 1001), (.int4, 1001), (.int4, 1024), (.fp4, 257), (.int4, 1)])
  func seededPayloadIsValidInAnyPieces(format: DeltaFormat, count: Int) throws {
    let p = SeededPayload(count: count, format: format, seed: 42)
    #expect(p.size == DeltaCodec.encodedSize(count: count, format: format))
    let whole = p.octets(at: 0, count: p.size)
    var g = SplitMix64(seed: UInt64(count))
    for _ in 0..<50 {
      let a = Int(g.next() % UInt64(p.size)), n = Int(g.next() % UInt64(p.size - a)) + 1
      #expect(p.octets(at: a, count: n) == Array(whole[a..<(a + n)]), "octets \(a) ..< \(a + n)")
    }
    let (f, sq) = try whole.withUnsafeBytes { try DeltaCodec.validate($0, count: count) }
    #expect(f == format)
    #expect(sq > 0)
    let x = try decode(whole, count: count)
    #expect(x.allSatisfy { $0.isFinite && abs($0) <= p.amplitude * 1.0001 })
    if count > 1 { #expect(Set(x).count > 1) }
    #expect(SeededPayload(count: count, format: format, seed: 43).octets(at: 0, count: p.size) != whole)
    if format != .int8 && count % 2 == 1 { #expect(whole.last! >> 4 == 0, "an odd last block pads a zero nibble") }
  }
}

/// Protocol/vectors/payloads.json: what the code writes, and an outside reader's view of it (decoded values,
/// a patch applied value by value, the shard's parts and hashes).
@Suite struct PayloadVectorTests {
  @Test func payloadVectorsAreWhatTheCodeWritesAndDecode() throws {
    let text = try String(contentsOfFile: repoRoot + "/Protocol/vectors/payloads.json", encoding: .utf8)
    #expect(text == (try FederationVectors.payloadsJSON()))
    let v = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
    let n = v["count"] as! Int
    let values = (v["values"] as! [NSNumber]).map(\.floatValue)
    let formula: [Float] = (0..<n).map { i in
      let k: Int = (i * 37) % 101
      return Float(Double(k) - 50) / 1000
    }
    #expect(values == formula)
    var out = [Float](repeating: 0, count: n)
    try unhex(v["fp32_payload"] as! String)!.withUnsafeBytes { try DeltaCodec.decode($0, into: &out, count: n, mode: .store) }
    #expect(out == values)
    try unhex(v["int8_payload"] as! String)!.withUnsafeBytes { try DeltaCodec.decode($0, into: &out, count: n, mode: .store) }
    #expect(out == (v["int8_decoded"] as! [NSNumber]).map(\.floatValue))
    let tolerance: Float = 0.05 / 127 + 1e-7
    #expect(zip(out, values).allSatisfy { (a: Float, b: Float) -> Bool in abs(a - b) <= tolerance })
    // The moments' trailer after the int8 payload: block means of the formula, and factors of mean 1 outside the
    // first block (the cap is not reached).
    let moments: [Float] = (0..<n).map { i in Float(Double((i * 11) % 89) + 1) / 10000 }
    let (_, means) = try (unhex(v["int8_payload"] as! String)! + unhex(v["moments_trailer"] as! String)!).withUnsafeBytes {
      try BlockMoments.split($0, count: n)
    }
    #expect(means == (v["moments_block_means"] as! [NSNumber]).map(\.floatValue))
    for (k, m) in means.enumerated() {
      let block = moments[(k * 256)..<min(n, k * 256 + 256)]
      #expect(abs(m - block.reduce(0, +) / Float(block.count)) < 1e-7)
    }
    let factors = (v["moments_factors"] as! [NSNumber]).map(\.floatValue)
    #expect(abs(factors[1] + factors[2] - 2) < 1e-5 && abs(factors[1] / factors[2] - (means[1] / means[2]).squareRoot()) < 1e-5)
    let patched = unhex(v["patched"] as! String)!
    #expect(hex(Sodium.blake2b(patched)) == v["patched_blake2b"] as! String)
    let shard = unhex(v["shard"] as! String)!
    let (lang, index, body) = try PublicShards.parse(shard)
    #expect(lang == "pl" && index == 3 && String(decoding: body, as: UTF8.self).hasPrefix("Zażółć"))
    #expect(hex(Sodium.blake2b(shard)) == v["shard_hash"] as! String)
  }

  /// The rounding on its edges (issue 31, B1), read as the SPEC's text says, not from the codec: ties go away from
  /// zero, a value just below a tie goes down, and every zero (of either sign, or a negative value rounded to 0)
  /// decodes to +0. Every value of each block is also read from the payload's octets by hand.
  @Test func tieVectorsRoundAwayFromZeroAndZeroIsPositive() throws {
    let text = try String(contentsOfFile: repoRoot + "/Protocol/vectors/payloads.json", encoding: .utf8)
    let v = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
    let expected: [String: [Float]] = [
      "int8": [127, -3, 3, -1, 1, 0, 0, -1, 2, -127],
      "int4": [7, -3, 3, -1, 1, 0, 0, -7, 6, -7],
      "fp4": [1, -0.25, 0.25, -1, 0x1p-6, 0, 0, 0, 0.5, -1],
    ]
    for (name, want) in expected {
      let t = v["ties_" + name] as! [String: Any]
      let decoded = (t["decoded_bits"] as! [String]).map { Float(bitPattern: UInt32($0, radix: 16)!) }
      #expect(decoded.map(\.bitPattern) == want.map(\.bitPattern), "\(name): \(decoded)")
      let payload = unhex(t["payload"] as! String)!
      // The SPEC's reader: one block, its scale, then int8 q or two 4-bit codes per octet (sign bit 3, index bits 0–2).
      let scale = Float(bitPattern: UInt32(payload[16]) | UInt32(payload[17]) << 8 | UInt32(payload[18]) << 16 | UInt32(payload[19]) << 24)
      #expect(scale == 1)
      let e: [Float] = [0, 0x1p-6, 0x1p-5, 0x1p-4, 0x1p-3, 0x1p-2, 0x1p-1, 1]
      let read: [Float] = (0..<want.count).map { i in
        if name == "int8" { return Float(Int8(bitPattern: payload[20 + i])) * scale }
        let code = (payload[20 + i / 2] >> (4 * UInt8(i % 2))) & 0xF
        let magnitude = name == "int4" ? Float(code & 7) : e[Int(code & 7)]
        return code & 8 != 0 ? -(scale * magnitude) : scale * magnitude
      }
      #expect(read.map(\.bitPattern) == want.map(\.bitPattern), "\(name) read by hand: \(read)")
    }
  }

}
