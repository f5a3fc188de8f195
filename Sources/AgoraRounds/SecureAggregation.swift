import AgoraCrypto
import AgoraSecureAggregation
import AgoraTensor
import AgoraTransport
import AgoraWire
import Foundation

/// The ring of a secure round (`rounds.secure_aggregation_bits` or `rounds.secure_aggregation_node_bits`).
public enum SecureAggregationRing: Sendable, Equatable, CustomStringConvertible {
  /// b bits whatever the number of participants.
  case fixed(Int)
  /// The smallest ring in which each participant keeps the levels of a signed p-bit integer (`RingCodec.bits`).
  case perNode(Int)

  /// Bits per node when federation.toml names neither key.
  public static let defaultNodeBits = 3

  /// The federation.toml line that chooses this ring (under [rounds]).
  public var setting: String {
    switch self {
    case .fixed(let b): return "secure_aggregation_bits = \(b)"
    case .perNode(let p): return "secure_aggregation_node_bits = \(p)"
    }
  }

  /// The ring's bits for a round of `participants` nodes.
  public func bits(participants: Int) -> Int {
    switch self {
    case .fixed(let b): return b
    case .perNode(let p): return max(4, RingCodec.bits(nodeBits: p, nodes: participants))
    }
  }

  public var description: String {
    switch self {
    case .fixed(let b): return "\(b)-bit ring"
    case .perNode(let p): return "ring of \(p) bits per node"
    }
  }
}

extension FederationConfig {
  /// The clip range c a secure round announces: what round r's H AdamW steps can move a weight and, with
  /// differential privacy, four standard deviations of a node's share of the noise among n participants.
  package func secureRange(round r: Int, participants n: Int) -> Float {
    let noise = dpClip > 0 ? 4 * dpNoiseMultiplier * dpClip / Double(n).squareRoot() : 0
    return Float(Double(innerSteps(round: r)) * learningRate + noise)
  }
}

/// How a round's updates are encoded in the ring under secure aggregation (SPEC §7.2), as the roster announces
/// it: node k sends round(a_k,i · clip(x_i, ±c) / u) with
///
///     a_k,i = f_k / n                      for every parameter outside the embedding rows,
///     a_k,i = f_k · V·q_k,r / R_r          in embedding row r (with `rounds.embedding_rows = "token_counts"`),
///
/// f_k = the steps it ran over the round's steps (its tokens over the nominal ones), n the participants, V·q_k its
/// COUNTS relative to an average token (1 without counts), R_r = Σ_j V·q_j,r over the participants. So Σ_k a_k ≤ 1
/// at every parameter and the sum fits the ring; the coordinator divides the unmasked sum by the survivors'
/// Σ a_k — exactly the plain mode's weighted mean (tokens, and rows by counts).
public struct SecureEncoding {
  public let codec: RingCodec
  public let participants: Int
  /// c: the clip range of every value (one for all tensors: H·lr, what H AdamW steps can move a weight).
  public let range: Float
  public let quantum: Float
  /// R_r (nil: the rows weigh like every parameter).
  public let rowTotals: [Float]?
  public let rows: (offset: Int, count: Int, width: Int)

  public init(bits: Int, participants: Int, range: Float, rowTotals: [Float]?, rows: (offset: Int, count: Int, width: Int)) throws {
    codec = try RingCodec(bits: bits)
    self.participants = participants
    self.range = range
    quantum = try codec.quantum(range: range, nodes: participants)
    self.rowTotals = rowTotals
    self.rows = rows
  }

  /// The payload of a masked update: "AGDR" ‖ bits: u8 ‖ 3 zero octets ‖ count: u64 ‖ the packed ring values.
  public static let headerBytes = 16
  static let magic: [UInt8] = Array("AGDR".utf8)

  public func payloadBytes(count: Int) -> Int { SecureEncoding.payloadBytes(count: count, bits: codec.bits) }
  /// … of `count` values in a ring of `bits` bits.
  public static func payloadBytes(count: Int, bits: Int) -> Int { headerBytes + RingCodec.packedBytes(count: count, bits: bits) }

  /// The packed values of a masked update, after checking its head against this round's encoding.
  public func packed(_ payload: UnsafeRawBufferPointer, count: Int) throws -> UnsafeRawBufferPointer {
    guard payload.count == payloadBytes(count: count), Array(payload.prefix(4)) == SecureEncoding.magic, payload[4] == UInt8(codec.bits),
          payload[5] == 0, payload[6] == 0, payload[7] == 0,
          payload.loadUnaligned(fromByteOffset: 8, as: UInt64.self) == UInt64(count).littleEndian else {
      throw DeltaError.length(got: payload.count, expected: payloadBytes(count: count))
    }
    return UnsafeRawBufferPointer(rebasing: payload[SecureEncoding.headerBytes...])
  }

  /// R_r of the participants whose V·q are `relatives` (nil: a participant without counts, 1 in every row).
  public static func rowTotals(_ relatives: [[Float]?], rows: Int) -> [Float] {
    var t = [Float](repeating: 0, count: rows)
    for rel in relatives {
      if let rel { for i in t.indices { t[i] += rel[i] } } else { for i in t.indices { t[i] += 1 } }
    }
    return t
  }

  /// Node k's factor at each row (nil: the same as every parameter's, f/n).
  func rowFactors(fraction f: Float, relative: [Float]?) -> [Float]? {
    guard let rowTotals else { return nil }
    return (0..<rows.count).map { r in f * (relative?[r] ?? 1) / max(rowTotals[r], 1e-30) }
  }

  /// A node's masked update: x (its Δ plus its error feedback) encoded, the rest left in x (its new error
  /// feedback), masked by `party`, packed behind the head. Piece by piece (`MaskStream.words` values at a time, on
  /// every thread): a piece is encoded, masked and packed while it is in cache, and no vector of ring words is
  /// ever whole in memory.
  /// `seed`: the stochastic rounding's (nil: drawn for this update; it is not a secret). `party` nil: no masks —
  /// what `agora simulate` sends, since the masks cancel in the sum and the unmasked sum is exactly the sum of
  /// these unmasked encodings (the same arithmetic, without the key agreement).
  public func encode(_ x: UnsafeMutableBufferPointer<Float>, fraction f: Float, relative: [Float]?, party: SecureAggregationNode?,
                     seed: UInt64? = nil) throws -> [UInt8] {
    let n = x.count
    let seed = seed ?? Sodium.randomBytes(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    let masks = try party?.maskSeeds()
    let stream = try MaskStream(threads: 1, ringBits: codec.bits)
    let body = f / Float(participants)
    let rowF = rowFactors(fraction: f, relative: relative)
    let (lo, hi, width) = (rows.offset, rows.offset + rows.count * rows.width, rows.width)
    let codec = codec, range = range, quantum = quantum
    var out = [UInt8](repeating: 0, count: payloadBytes(count: n))
    out.replaceSubrange(0..<4, with: SecureEncoding.magic)
    out[4] = UInt8(codec.bits)
    withUnsafeBytes(of: UInt64(n).littleEndian) { out.replaceSubrange(8..<16, with: $0) }
    let piece = MaskStream.words, pieces = (n + piece - 1) / piece
    let lock = NSLock()
    var failure: Error?
    out.withUnsafeMutableBytes { ob in
      let packed = ob.baseAddress! + SecureEncoding.headerBytes
      Parallel.forRange(pieces) { p0, p1 in
        let words = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: piece)
        defer { words.deallocate() }
        for p in p0..<p1 {
          let a = p * piece, b = min(n, a + piece)
          // Runs of one factor: the body's, or one embedding row's.
          var i = a
          while i < b {
            let (end, factor): (Int, Float)
            if let rowF, i >= lo, i < hi {
              let r = (i - lo) / width
              (end, factor) = (min(b, lo + (r + 1) * width), rowF[r])
            } else {
              (end, factor) = (min(b, i < lo ? lo : n), body)
            }
            RingCodec.encode(UnsafeMutableBufferPointer(rebasing: x[i..<end]), factor: factor, range: range, quantum: quantum, seed: seed,
                             first: i, into: UnsafeMutableBufferPointer(rebasing: words[(i - a)..<(end - a)]))
            i = end
          }
          let w = UnsafeMutableBufferPointer(rebasing: words[0..<(b - a)])
          if let masks {
            do { try stream.apply(masks, to: w, first: a) } catch {
              lock.withLock { failure = error }
              return
            }
          }
          // a is a multiple of 8: the piece starts on an octet.
          codec.pack(UnsafeBufferPointer(w), into: UnsafeMutableRawBufferPointer(start: packed + a * codec.bits / 8, count: codec.packedBytes(count: b - a)))
        }
      }
    }
    if let failure { throw failure }
    return out
  }

  /// The survivors' total factor, per parameter outside the rows and per row, and how many survivors there are.
  public struct Totals {
    public var body = 0.0
    public var rows: [Double]
    public var survivors = 0
  }

  public func totals() -> Totals { Totals(rows: [Double](repeating: 0, count: rows.count)) }

  /// Adds a survivor's factors to `t`.
  public func add(fraction f: Float, relative: [Float]?, to t: inout Totals) {
    t.survivors += 1
    t.body += Double(f) / Double(participants)
    if let rf = rowFactors(fraction: f, relative: relative) {
      for r in 0..<rows.count { t.rows[r] += Double(rf[r]) }
    } else {
      for r in 0..<rows.count { t.rows[r] += Double(f) / Double(participants) }
    }
  }

  /// The smallest total factor the mean divides by, with `survivors` in the sum: s·u/c. Each survivor's value is
  /// within one quantum u of what it encoded (stochastic rounding), so the mean's error stays below
  /// s·u / max(total, s·u/c) ≤ c, and an honest mean (within ±c) decodes within ±2c, which the coordinator checks.
  /// Only a row whose survivors hold less weight than that (their nodes dropped out after the roster took their
  /// counts, SPEC §7.2 step 5) is divided by the floor: it moves less, rather than by its rounding noise
  /// amplified (issue 31: 9-bit and narrower rings refused honest rounds after such a dropout).
  public func divisorFloor(survivors: Int) -> Double { Double(max(survivors, 1)) * Double(quantum) / Double(range) }

  /// The unmasked ring sum (`count` words at `memory`) becomes the survivors' weighted mean, as binary32 values in
  /// the same memory (each total factor at least `divisorFloor`).
  public func decode(_ memory: UnsafeMutableRawPointer, count: Int, totals t: Totals) {
    let (lo, hi, width) = (rows.offset, rows.offset + rows.count * rows.width, rows.width)
    let u = Double(quantum)
    let floor = divisorFloor(survivors: t.survivors)
    let bodyScale = Float(u / max(t.body, floor))
    let rowScale = t.rows.map { Float(u / max($0, floor)) }
    let codec = codec
    Parallel.forRange(count, minChunk: 16384) { a, b in
      for i in a..<b {
        let v = Float(codec.signed(memory.load(fromByteOffset: 4 * i, as: UInt32.self)))
        memory.storeBytes(of: v * ((i >= lo && i < hi) ? rowScale[(i - lo) / width] : bodyScale), toByteOffset: 4 * i, as: Float.self)
      }
    }
  }
}
