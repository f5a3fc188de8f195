import AgoraWire
import Foundation

/// An institution's (or the coordinator's) keys: an Ed25519 signing key that signs updates and versions,
/// an X25519 key for CurveZMQ sessions, and — for a coordinator — an X25519 aggregation key that updates
/// are sealed to. Secret files are written with mode 0600 and never overwritten.
public struct Identity: Sendable {
  public var card: EnrolmentCard
  public var signSecret: [UInt8]
  public var curveSecret: [UInt8]
  public var aggregationSecret: [UInt8]?

  public static let signFile = "sign.key"
  public static let curveFile = "curve.key"
  public static let aggregationFile = "aggregation.key"
  public static let cardFile = "card.toml"

  /// Creates a new identity in `dir`. Refuses if any of its files exists.
  public static func generate(in dir: String, name: String, institution: String, contact: String, coordinator: Bool) throws -> Identity {
    let fm = FileManager.default
    for f in [signFile, curveFile, aggregationFile, cardFile] where fm.fileExists(atPath: dir + "/" + f) {
      throw IdentityError.exists(dir + "/" + f)
    }
    try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let sign = try Sodium.signKeypair()
    let curve = try Sodium.boxKeypair()
    let agg = coordinator ? try Sodium.boxKeypair() : nil
    let card = EnrolmentCard(name: name, institution: institution, contact: contact, signPublic: sign.publicKey,
                             curvePublic: curve.publicKey, aggregationPublic: agg?.publicKey, created: Date())
    try writeSecret(sign.secretKey, to: dir + "/" + signFile)
    try writeSecret(curve.secretKey, to: dir + "/" + curveFile)
    if let agg { try writeSecret(agg.secretKey, to: dir + "/" + aggregationFile) }
    guard fm.createFile(atPath: dir + "/" + cardFile, contents: Data(card.toml().utf8), attributes: [.posixPermissions: 0o644]) else {
      throw IdentityError.io(dir + "/" + cardFile, "cannot write")
    }
    return Identity(card: card, signSecret: sign.secretKey, curveSecret: curve.secretKey, aggregationSecret: agg?.secretKey)
  }

  /// Loads the secret keys of an identity in `dir` whose card (`dir/card.toml`, read by the caller) is `card`,
  /// checking that each secret key matches the public key on the card.
  public static func load(from dir: String, card: EnrolmentCard) throws -> Identity {
    let sign = try readSecret(dir + "/" + signFile, bytes: Sodium.signSecretKeyBytes)
    guard Array(sign.suffix(32)) == card.signPublic else { throw IdentityError.mismatch(dir + "/" + signFile, "does not belong to the card's signing key") }
    let curve = try readSecret(dir + "/" + curveFile, bytes: Sodium.boxSecretKeyBytes)
    guard try Sodium.boxPublicKey(secretKey: curve) == card.curvePublic else { throw IdentityError.mismatch(dir + "/" + curveFile, "does not belong to the card's CURVE key") }
    var agg: [UInt8]? = nil
    if let ap = card.aggregationPublic {
      let a = try readSecret(dir + "/" + aggregationFile, bytes: Sodium.boxSecretKeyBytes)
      guard try Sodium.boxPublicKey(secretKey: a) == ap else { throw IdentityError.mismatch(dir + "/" + aggregationFile, "does not belong to the card's aggregation key") }
      agg = a
    }
    return Identity(card: card, signSecret: sign, curveSecret: curve, aggregationSecret: agg)
  }

  static func writeSecret(_ key: [UInt8], to path: String) throws {
    // O_EXCL: never replace a key that appeared meanwhile; 0600 from the start, not chmod afterwards.
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
    guard fd >= 0 else { throw errno == EEXIST ? IdentityError.exists(path) : IdentityError.io(path, "open failed: errno \(errno)") }
    defer { close(fd) }
    let text = Array((hex(key) + "\n").utf8)
    guard write(fd, text, text.count) == text.count, fsync(fd) == 0 else { throw IdentityError.io(path, "write failed") }
  }

  static func readSecret(_ path: String, bytes: Int) throws -> [UInt8] {
    var st = stat()
    guard stat(path, &st) == 0 else { throw IdentityError.io(path, "cannot read") }
    guard st.st_mode & 0o077 == 0 else { throw IdentityError.insecure(path, String(st.st_mode & 0o777, radix: 8)) }
    guard let d = FileManager.default.contents(atPath: path),
          let k = unhex(String(decoding: d, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)), k.count == bytes
    else { throw IdentityError.mismatch(path, "not a \(bytes)-byte hex key") }
    return k
  }
}

/// The public part of an identity that an institution sends to the coordinator to enrol.
public struct EnrolmentCard: Equatable, Sendable {
  public var name: String
  public var institution: String
  public var contact: String
  public var signPublic: [UInt8]
  public var curvePublic: [UInt8]
  public var aggregationPublic: [UInt8]?
  public var created: Date

  /// BLAKE2b-256 of the signing key, in hex: the node id everywhere in Agora.
  public var fingerprint: String { hex(Envelope.fingerprint(signPublic)) }
  public var nodeID: [UInt8] { Envelope.fingerprint(signPublic) }
  public var curvePublicZ85: String { Z85.encode(curvePublic)! }

  public init(name: String, institution: String, contact: String, signPublic: [UInt8], curvePublic: [UInt8],
              aggregationPublic: [UInt8]?, created: Date) {
    self.name = name
    self.institution = institution
    self.contact = contact
    self.signPublic = signPublic
    self.curvePublic = curvePublic
    self.aggregationPublic = aggregationPublic
    self.created = created
  }

  public func toml() -> String {
    let iso = ISO8601DateFormatter().string(from: created)
    var s = """
    # Agora enrolment card: public keys only. Send this file to the coordinator to enrol.
    name = \(jsonString(name))
    institution = \(jsonString(institution))
    contact = \(jsonString(contact))
    created = \(jsonString(iso))
    # Ed25519 key that signs this party's updates (hex); the fingerprint is BLAKE2b-256 of it.
    sign_public = "\(hex(signPublic))"
    fingerprint = "\(fingerprint)"
    # X25519 key of its CurveZMQ sessions (Z85, as ZeroMQ writes it).
    curve_public = "\(curvePublicZ85)"

    """
    if let a = aggregationPublic {
      s += "# X25519 key that nodes seal their updates to (hex; coordinators only).\naggregation_public = \"\(hex(a))\"\n"
    }
    return s
  }

  /// A card from its fields (`field(key)` is the string under `key` in the card file, nil when absent), checked:
  /// keys of 32 bytes, a fingerprint that matches the signing key. `path` names the file in errors.
  public static func parse(path: String, field: (String) -> String?, has: (String) -> Bool) throws -> EnrolmentCard {
    func str(_ k: String) throws -> String {
      guard let v = field(k) else { throw IdentityError.card(path, "key '\(k)' is missing or not a string") }
      return v
    }
    func key(_ k: String, _ decode: (String) -> [UInt8]?) throws -> [UInt8] {
      guard let b = decode(try str(k)), b.count == 32 else { throw IdentityError.card(path, "key '\(k)' is not a 32-byte key") }
      return b
    }
    let sign = try key("sign_public", unhex)
    let card = EnrolmentCard(name: try str("name"), institution: try str("institution"), contact: try str("contact"),
                             signPublic: sign, curvePublic: try key("curve_public", Z85.decode),
                             aggregationPublic: has("aggregation_public") ? try key("aggregation_public", unhex) : nil,
                             created: ISO8601DateFormatter().date(from: try str("created")) ?? Date(timeIntervalSince1970: 0))
    if let fp = field("fingerprint"), fp != card.fingerprint {
      throw IdentityError.card(path, "fingerprint \(fp) does not match the signing key (\(card.fingerprint))")
    }
    return card
  }
}

public enum IdentityError: Error, Equatable, CustomStringConvertible {
  case exists(String)
  case io(String, String)
  case insecure(String, String)
  case mismatch(String, String)
  case card(String, String)

  public var description: String {
    switch self {
    case .exists(let p): return "\(p) already exists; an identity is never overwritten (choose another --out)"
    case .io(let p, let s): return "\(p): \(s)"
    case .insecure(let p, let mode): return "\(p): secret key file has mode \(mode); it must be readable by its owner only (chmod 600)"
    case .mismatch(let p, let s): return "\(p): \(s)"
    case .card(let p, let s): return "\(p): invalid enrolment card: \(s)"
    }
  }
}
