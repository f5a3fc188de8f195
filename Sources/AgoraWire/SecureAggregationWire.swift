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

extension Message {
  /// The body of an SA_* message after its type octet (`payload`: SA_ROSTER's payload frame).
  static func decodeSecureAggregation(_ type: MessageType, _ r: inout ByteReader, payload: Payload?) throws -> Message {
    let m: Message
    switch type {
    case .secaggKeys:
      m = .secaggKeys(round: try r.u64("round"), keys: try SecAggKeys.read(&r))
    case .secaggRoster:
      let round = try r.u64("round")
      let t = SecAggRosterTerms(ringBits: try r.u8("ring bits"), neighbours: try r.u16("neighbours"), thresholdPermille: try r.u16("threshold"),
                                ranges: try r.u32("ranges"), rows: try r.u32("rows"))
      guard (2...32).contains(t.ringBits), (500...1000).contains(t.thresholdPermille), t.ranges >= 1 else {
        throw DecodeError.invalid("roster terms out of range (ring bits \(t.ringBits): 2 to 32; threshold \(t.thresholdPermille)‰: 500 to 1000; \(t.ranges) ranges: at least 1)")
      }
      guard (UInt64(t.ranges) + UInt64(t.rows)) * 4 == UInt64((payload?.count ?? 0)) else {
        throw DecodeError.invalid("a roster of \(t.ranges) ranges and \(t.rows) rows needs \((UInt64(t.ranges) + UInt64(t.rows)) * 4) payload octets, not \((payload?.count ?? 0))")
      }
      let n = Int(try r.u16("participant count"))
      guard (2...255).contains(n) else { throw DecodeError.invalid("a roster of \(n) participants (2 to 255)") }
      var ps: [SecAggParticipant] = []
      for _ in 0..<n {
        let p = SecAggParticipant(node: try r.raw(32, "node"), keys: try SecAggKeys.read(&r))
        guard ps.last.map({ $0.node.lexicographicallyPrecedes(p.node) }) ?? true else { throw DecodeError.invalid("roster nodes must be in strictly increasing order") }
        ps.append(p)
      }
      m = .secaggRoster(round: round, terms: t, participants: ps, payload: payload!)
    case .secaggShares:
      let round = try r.u64("round"), n = Int(try r.u16("share count"))
      guard n <= 254 else { throw DecodeError.tooLarge("share count", value: n, bound: 254) }
      var shares: [SecAggShareBox] = []
      for _ in 0..<n {
        let peer = try r.raw(32, "peer"), len = Int(try r.u16("box length"))
        guard len <= SecAggShareBox.maxBox else { throw DecodeError.tooLarge("share box", value: len, bound: SecAggShareBox.maxBox) }
        shares.append(SecAggShareBox(peer: peer, box: try r.raw(len, "share box")))
      }
      guard Set(shares.map(\.peer)).count == shares.count else { throw DecodeError.invalid("two share boxes for the same peer") }
      m = .secaggShares(round: round, shares: shares)
    case .secaggUnmask:
      let round = try r.u64("round"), survivors = try SecAggWire.ids(&r, "survivors"), dropped = try SecAggWire.ids(&r, "dropped")
      guard Set(survivors).isDisjoint(with: dropped) else { throw DecodeError.invalid("a node named both as a survivor and as dropped") }
      m = .secaggUnmask(round: round, survivors: survivors, dropped: dropped)
    case .secaggReveal:
      let round = try r.u64("round"), n = Int(try r.u16("share count"))
      guard n <= 254 else { throw DecodeError.tooLarge("share count", value: n, bound: 254) }
      var shares: [SecAggRevealed] = []
      for _ in 0..<n {
        let x = SecAggRevealed(about: try r.raw(32, "node"), kind: try r.u8("kind"), x: try r.u8("point"), share: try r.raw(32, "share"))
        guard x.kind <= 1, x.x >= 1 else { throw DecodeError.invalid("revealed share of kind \(x.kind) at point \(x.x) (kind 0 or 1, point ≥ 1)") }
        shares.append(x)
      }
      guard Set(shares.map(\.about)).count == shares.count else { throw DecodeError.invalid("two revealed shares about the same node") }
      m = .secaggReveal(round: round, shares: shares)
      default:
        throw DecodeError.invalid("\(type) is not a secure-aggregation message")
    }
    return m
  }
}
