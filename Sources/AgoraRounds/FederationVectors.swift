import AgoraCrypto
import AgoraWire
import Foundation

/// Test vectors of what travels inside blobs and envelopes (Protocol/vectors/payloads.json): AGDQ update
/// payloads in both formats, a version patch applied to a parameter vector, and a public shard. `agora protocol
/// vectors` writes them; the tests check that the file is what this code writes and that it decodes.
public enum FederationVectors {
  /// 600 values (two whole int8 blocks and a short one), made from a formula anyone can recompute.
  public static let values: [Float] = (0..<600).map { i in Float(Double((i * 37) % 101) - 50) / 1000 }
  /// Second moments of the same 600 values (positive, for the AGDM trailer).
  public static let momentValues: [Float] = (0..<600).map { i in Float(Double((i * 11) % 89) + 1) / 10000 }
  /// A base parameter vector the patch is applied to.
  public static let base: [Float] = (0..<600).map { i in Float(Double((i * 13) % 97) - 48) / 100 }

  /// Values on the rounding's edges, one block for each of int8 (scale = 127 / 127 = 1), int4 (7 / 7 = 1) and fp4
  /// (scale = 1): ties of both signs (away from zero), values just below a tie, and zeros of both signs (coded +0).
  public static let ties: [DeltaFormat: [Float]] = [
    .int8: [127, -2.5, 2.5, -0.5, 0.5, -0.0, 0, -1.4999999, 1.5000001, -127],
    .int4: [7, -2.5, 2.5, -0.5, 0.5, -0.0, 0, -6.5, 6.4999995, -7],
    .fp4: [1, -0.1875, 0.1875, -0.75, 0.0078125, -0.0, 0, -0.0078124995, 0.375, -1],
  ]

  /// The `ties` block of `format`: its payload and what it decodes to.
  static func tieVector(_ format: DeltaFormat) throws -> (values: [Float], payload: [UInt8], decoded: [Float]) {
    let v = ties[format] ?? []
    let bytes = v.withUnsafeBufferPointer { DeltaCodec.encode($0, format: format) }
    var out = [Float](repeating: 0, count: v.count)
    try bytes.withUnsafeBytes { try DeltaCodec.decode($0, into: &out, count: v.count, mode: .store) }
    return (v, bytes, out)
  }

  public static func payloadsJSON() throws -> String {
    let fp32 = values.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .fp32) }
    let int8 = values.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .int8) }
    var decoded = [Float](repeating: 0, count: values.count)
    try int8.withUnsafeBytes { try DeltaCodec.decode($0, into: &decoded, count: values.count, mode: .store) }
    var patched = base
    try int8.withUnsafeBytes { try DeltaCodec.decode($0, into: &patched, count: values.count, mode: .subtract) }
    let patchedBytes = patched.withUnsafeBytes { Array($0) }
    func fourBit(_ f: DeltaFormat) throws -> (payload: [UInt8], decoded: [Float]) {
      let bytes = values.withUnsafeBufferPointer { DeltaCodec.encode($0, format: f) }
      var out = [Float](repeating: 0, count: values.count)
      try bytes.withUnsafeBytes { try DeltaCodec.decode($0, into: &out, count: values.count, mode: .store) }
      return (bytes, out)
    }
    let (int4, int4Decoded) = try fourBit(.int4), (fp4, fp4Decoded) = try fourBit(.fp4)
    // Second moments that follow an update (§6.2), and the factors they give with α = ½ when the first block
    // is the embedding's (§4.2).
    let moments = momentValues.withUnsafeBufferPointer { BlockMoments.trailer($0) }
    let (_, means) = try (int8 + moments).withUnsafeBytes { try BlockMoments.split($0, count: values.count) }
    let factors = BlockMoments.factors(means, alpha: 0.5, skip: 0..<256, count: values.count)
    let shard = Array("agora-shard 1 pl 3\n".utf8) + Array("Zażółć gęślą jaźń.\n\nDrugi dokument.\n".utf8)
    func floats(_ a: [Float]) -> String { "[" + a.map { String(format: "%.9g", $0) }.joined(separator: ", ") + "]" }
    // Sign and bits exactly: -0 and +0 differ here.
    func bitsOf(_ a: [Float]) -> String { "[" + a.map { "\"\(String(format: "%08x", $0.bitPattern))\"" }.joined(separator: ", ") + "]" }
    let tieLines = try [DeltaFormat.int8, .int4, .fp4].map { f -> String in
      let t = try tieVector(f)
      return "\"ties_\(f.name)\": {\"values_bits\": \(bitsOf(t.values)), \"payload\": \"\(hex(t.payload))\", \"decoded_bits\": \(bitsOf(t.decoded))}"
    }
    return """
    {
      "description": "AGDQ payloads (SPEC §6.2), a version patch (§5) and a public shard (§5.1). values[i] = ((37 i mod 101) - 50) / 1000 and base[i] = ((13 i mod 97) - 48) / 100 for i < 600, as binary32; int8, int4 and fp4 round to nearest",
      "count": \(values.count),
      "values": \(floats(values)),
      "fp32_payload": "\(hex(fp32))",
      "int8_payload": "\(hex(int8))",
      "int8_decoded": \(floats(decoded)),
      "int4_payload": "\(hex(int4))",
      "int4_decoded": \(floats(int4Decoded)),
      "fp4_payload": "\(hex(fp4))",
      "fp4_decoded": \(floats(fp4Decoded)),
      "ties_comment": "rounding on its edges (SPEC §6.2): per format one block whose scale is 1 (max |v| = 127, 7 or 1); values and decoded values as binary32 bit patterns (hex, big-endian digits); v × (1 / scale) in binary32, to nearest with ties away from zero; a value coded 0 decodes to +0",
      \(tieLines.joined(separator: ",\n  ")),
      "moments_comment": "second moments m[i] = ((11 i mod 89) + 1) / 10000 for i < 600; the AGDM trailer that follows int8_payload, its block means, and the block factors with alpha = 0.5 when values 0..<256 are the embedding's",
      "moments_trailer": "\(hex(moments))",
      "moments_block_means": \(floats(means)),
      "moments_factors": \(floats(factors)),
      "base": \(floats(base)),
      "patched": "\(hex(patchedBytes))",
      "patched_comment": "base minus the int8 payload's values, value by value in binary32, as little-endian octets; a version hash covers such octets after the safetensors header",
      "patched_blake2b": "\(hex(Sodium.blake2b(patchedBytes)))",
      "shard": "\(hex(shard))",
      "shard_hash": "\(hex(Sodium.blake2b(shard)))"
    }

    """
  }
}
