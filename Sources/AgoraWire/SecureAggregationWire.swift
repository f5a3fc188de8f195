/// The fields of the secure-aggregation messages (SPEC §8): plain values, checked for size and range when
/// decoded; the cryptography is AgoraSecureAggregation's.

/// A node's signed key advertisement for one round (SA_KEYS; each entry of SA_ROSTER with its node id).
public struct SecAggKeys: Equatable, Hashable, Sendable {
  public var cPublic: [UInt8]
  public var sPublic: [UInt8]
  public var commitment: [UInt8]
  public var signature: [UInt8]
  public init(cPublic: [UInt8], sPublic: [UInt8], commitment: [UInt8], signature: [UInt8]) {
    self.cPublic = cPublic
    self.sPublic = sPublic
    self.commitment = commitment
    self.signature = signature
  }

  func write(to w: inout ByteWriter) { w.raw(cPublic); w.raw(sPublic); w.raw(commitment); w.raw(signature) }
  static func read(_ r: inout ByteReader) throws -> SecAggKeys {
    SecAggKeys(cPublic: try r.raw(32, "c public key"), sPublic: try r.raw(32, "s public key"), commitment: try r.raw(32, "self-mask commitment"),
               signature: try r.raw(64, "signature"))
  }
}

/// One participant of a round's roster.
public struct SecAggParticipant: Equatable, Hashable, Sendable {
  public var node: [UInt8]
  public var keys: SecAggKeys
  public init(node: [UInt8], keys: SecAggKeys) {
    self.node = node
    self.keys = keys
  }
}

/// A share box between two nodes: `peer` is the recipient in a node's SA_SHARES and the sender in the
/// coordinator's.
public struct SecAggShareBox: Equatable, Hashable, Sendable {
  public static let maxBox = 1024
  public var peer: [UInt8]
  public var box: [UInt8]
  public init(peer: [UInt8], box: [UInt8]) {
    self.peer = peer
    self.box = box
  }
}

/// A share revealed at unmasking: of node `about`'s self-mask seed (kind 0) or mask key (kind 1), at point `x`.
public struct SecAggRevealed: Equatable, Hashable, Sendable {
  public var about: [UInt8]
  public var kind: UInt8
  public var x: UInt8
  public var share: [UInt8]
  public init(about: [UInt8], kind: UInt8, x: UInt8, share: [UInt8]) {
    self.about = about
    self.kind = kind
    self.x = x
    self.share = share
  }
}

/// The parameters a roster carries: the ring, the neighbour graph's degree (0: automatic) and threshold (per
/// mille of the degree), and how many per-tensor ranges and per-row weight totals its payload holds.
public struct SecAggRosterTerms: Equatable, Hashable, Sendable {
  public var ringBits: UInt8
  public var neighbours: UInt16
  public var thresholdPermille: UInt16
  public var ranges: UInt32
  public var rows: UInt32
  public init(ringBits: UInt8, neighbours: UInt16, thresholdPermille: UInt16, ranges: UInt32, rows: UInt32) {
    self.ringBits = ringBits
    self.neighbours = neighbours
    self.thresholdPermille = thresholdPermille
    self.ranges = ranges
    self.rows = rows
  }
}

enum SecAggWire {
  static func ids(_ ids: [[UInt8]], _ w: inout ByteWriter) {
    w.u16(UInt16(ids.count))
    for i in ids { w.raw(i) }
  }

  static func ids(_ r: inout ByteReader, _ what: String) throws -> [[UInt8]] {
    let n = Int(try r.u16("\(what) count"))
    guard n <= 255 else { throw DecodeError.tooLarge("\(what) count", value: n, bound: 255) }
    let out = try (0..<n).map { _ in try r.raw(32, what) }
    guard Set(out).count == out.count else { throw DecodeError.invalid("a node named twice among the \(what)") }
    return out
  }
}
