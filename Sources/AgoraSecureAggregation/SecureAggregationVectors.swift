import AgoraCrypto
import AgoraWire
import Foundation

/// Test vectors of secure aggregation's derivations (Protocol/vectors/secagg.json, SPEC §7.2), from fixed keys:
/// the X25519 agreement of two nodes' s keys and the pairwise seed, the self-mask seed and commitment of a fixed
/// b, the first mask words of each seed (AES-256-CTR), a 12-bit packing, and a roster's neighbour graph. An outside
/// implementation that reproduces them masks and unmasks as Agora does.
public enum SecureAggregationVectors {
  static func bytes(_ b: UInt8, _ n: Int = 32) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: Int(b) &+ $0) } }

  public static func json() throws -> String {
    let federation = "openeurollm", round: UInt64 = 42
    let (u, v) = (bytes(0x10), bytes(0x20))  // node ids
    let su = try Sodium.boxKeypair(seed: bytes(0x30)), sv = try Sodium.boxKeypair(seed: bytes(0x40))
    let agreement = try Sodium.agree(secretKey: su.secretKey, publicKey: sv.publicKey)
    let pair = try MaskSeeds.pairwise(federation: federation, round: round, agreement: agreement, a: u, b: v)
    let b = bytes(0x50)
    let selfSeed = try MaskSeeds.selfMask(b)
    func words(_ seed: [UInt8], ringBits: Int = 32) throws -> [UInt32] {
      var w = [UInt32](repeating: 0, count: 8)
      try w.withUnsafeMutableBufferPointer { try MaskStream(ringBits: ringBits).apply(seed: seed, to: $0) }
      return w
    }
    let values: [UInt32] = [0, 1, 0xFFF, 0x800, 0x123, 0xABC, 7]
    let codec = try RingCodec(bits: 12)
    var packed = [UInt8](repeating: 0, count: codec.packedBytes(count: values.count))
    values.withUnsafeBufferPointer { vb in packed.withUnsafeMutableBytes { codec.pack(vb, into: $0) } }
    // A roster of 20 advertisements with fixed keys (signatures are not part of the graph): k = 10, t = 7.
    var ads: [Advertisement] = []
    for i in 0..<20 {
      let k = UInt8(i * 11)
      ads.append(Advertisement(node: bytes(k), cPublic: bytes(k + 1), sPublic: bytes(k + 2), selfMaskCommitment: bytes(k + 3),
                               signature: [UInt8](repeating: 0, count: 64)))
    }
    let roster = try Roster(federation: federation, round: round, parameters: .init(), participants: ads)
    func list(_ w: [UInt32]) -> String { "[" + w.map(String.init).joined(separator: ", ") + "]" }
    let graph = roster.neighbours.enumerated().map { "\"\(hex(roster.participants[$0.offset].node))\": " + list($0.element.map(UInt32.init)) }
    let entries = roster.participants.map {
      "{\"node\": \"\(hex($0.node))\", \"c\": \"\(hex($0.cPublic))\", \"s\": \"\(hex($0.sPublic))\", \"commitment\": \"\(hex($0.selfMaskCommitment))\"}"
    }
    return """
    {
      "description": "Secure aggregation's derivations (SPEC §7.2). Keys: X25519 from crypto_box_seed_keypair(seed); bytes(x) = x, x+1, … (32 octets, mod 256). Mask words: the first 8 little-endian u32 words of AES-256-CTR(seed, counter 0) added to zeros (rings of more than 16 bits); *_words_16: the first 8 u16 words (rings of 9 to 16 bits); *_words_8: the first 8 octets (rings of up to 8 bits). Roster: 20 advertisements, entry i (0-based) has node = bytes(11i), c = bytes(11i + 1), s = bytes(11i + 2), commitment = bytes(11i + 3) (roster_participants, in node-id order); neighbours automatic (k = 10); t from roster_threshold_permille; neighbours by roster index.",
      "federation": "\(federation)",
      "round": \(round),
      "node_u": "\(hex(u))",
      "node_v": "\(hex(v))",
      "s_seed_u": "\(hex(bytes(0x30)))",
      "s_seed_v": "\(hex(bytes(0x40)))",
      "s_public_u": "\(hex(su.publicKey))",
      "s_public_v": "\(hex(sv.publicKey))",
      "agreement": "\(hex(agreement))",
      "pairwise_seed": "\(hex(pair))",
      "pairwise_words": \(list(try words(pair))),
      "pairwise_words_16": \(list(try words(pair, ringBits: 16))),
      "pairwise_words_8": \(list(try words(pair, ringBits: 8))),
      "b": "\(hex(b))",
      "self_mask_seed": "\(hex(selfSeed))",
      "self_mask_words": \(list(try words(selfSeed))),
      "self_mask_words_16": \(list(try words(selfSeed, ringBits: 16))),
      "self_mask_words_8": \(list(try words(selfSeed, ringBits: 8))),
      "commitment": "\(hex(MaskSeeds.commitment(b)))",
      "ring_bits": 12,
      "ring_values": \(list(values)),
      "ring_packed": "\(hex(packed))",
      "roster_participants": [\(entries.joined(separator: ", "))],
      "roster_threshold_permille": \(SecureAggregationParameters().thresholdPermille),
      "roster_size": \(ads.count),
      "roster_degree": \(roster.degree),
      "roster_threshold": \(roster.threshold),
      "roster_neighbours": {\(graph.joined(separator: ", "))}
    }

    """
  }
}
