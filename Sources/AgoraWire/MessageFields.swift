/// The value types that messages carry (Protocol/SPEC.md §3.1): error codes and subjects, LEAVE's kind, JOIN's
/// terms, and the per-language records of UPLOAD_END and EVALUATION.

/// Error codes carried by `Message.error`.
public enum ErrorCode: UInt16, Sendable, CaseIterable {
  case malformed = 1, unsupportedVersion = 2, notEnrolled = 3, revoked = 4, unknownVersion = 5,
       wrongRound = 6, rejectedUpdate = 7, busy = 8, internalError = 9, unknownTransfer = 10, notJoined = 11,
       /// This node already delivered an update for the round, or had one refused (one update per node and round).
       duplicate = 12,
       /// JOIN: the node's tokenizer, model shape or training settings differ from the federation's.
       termsMismatch = 13,
       /// ENROL: the invitation or the card cannot be enrolled (SPEC §2.2); JOIN: a card enrolled by invitation
       /// joined as an institution.
       invitation = 14
}

/// What an ERROR answers: a transfer (UPLOAD_*), a blob (FETCH), a round, or nothing in particular.
/// From a node, an ERROR about a round says the node abandons that round (the coordinator stops waiting for it).
public enum ErrorSubject: Equatable, Hashable, Sendable {
  case none
  case transfer(UInt64)
  case blob([UInt8])
  case round(UInt64)
}

/// Why a session ends (LEAVE).
public enum LeaveKind: UInt8, Equatable, Sendable {
  /// The session ends; the other side may come back (a node or coordinator stopping or restarting).
  case session = 0
  /// The federation has held its last round: there is nothing more to join (coordinator → node only).
  case finished = 1
}

/// What every party of a federation must agree on, sent by a node at JOIN and checked by the coordinator:
/// a node with another tokenizer, model shape or training settings is refused with ERROR(13) naming the difference.
public struct TrainingTerms: Equatable, Hashable, Sendable {
  /// BLAKE2b-256 of the federation's `tokenizer.json` as its registry stores it.
  public var tokenizerHash: [UInt8]
  /// BLAKE2b-256 of the safetensors header of the version blobs (names, dtypes, shapes: the model's shape).
  public var modelHash: [UInt8]
  public var innerSteps: UInt32
  public var batch: UInt32
  /// IEEE 754 binary32 bits of the inner learning rate (peak of the schedule).
  public var learningRateBits: UInt32
  /// Rounds of the federation (the inner schedule spans rounds × inner steps).
  public var rounds: UInt32

  public init(tokenizerHash: [UInt8], modelHash: [UInt8], innerSteps: UInt32, batch: UInt32, learningRateBits: UInt32, rounds: UInt32) {
    self.tokenizerHash = tokenizerHash
    self.modelHash = modelHash
    self.innerSteps = innerSteps
    self.batch = batch
    self.learningRateBits = learningRateBits
    self.rounds = rounds
  }

  /// Every difference between a node's terms and the federation's, in words (empty: they agree).
  public func differences(fromFederation f: TrainingTerms) -> [String] {
    var d: [String] = []
    if tokenizerHash != f.tokenizerHash { d.append("tokenizer: node \(hex(tokenizerHash).prefix(12)), federation \(hex(f.tokenizerHash).prefix(12))") }
    if modelHash != f.modelHash { d.append("model (shape, and base checkpoint and adapter settings if any): node \(hex(modelHash).prefix(12)), federation \(hex(f.modelHash).prefix(12))") }
    if innerSteps != f.innerSteps { d.append("inner steps: node \(innerSteps), federation \(f.innerSteps)") }
    if batch != f.batch { d.append("batch: node \(batch), federation \(f.batch)") }
    if learningRateBits != f.learningRateBits {
      d.append("learning rate: node \(Float(bitPattern: learningRateBits)), federation \(Float(bitPattern: f.learningRateBits))")
    }
    if rounds != f.rounds { d.append("rounds: node \(rounds), federation \(f.rounds)") }
    return d
  }
}

/// Tokens a node trained on in one language during a round (reported with its update).
/// One language's score in EVALUATION: bits per byte of a version on `bytes` bytes of the node's validation text,
/// and what the node's own model trained alone scores there (`alone`; NaN when the node reports none).
public struct LanguageScore: Equatable, Hashable, Sendable {
  public var language: String
  public var bitsPerByte: Float
  public var bytes: UInt64
  public var alone: Float
  public init(language: String, bitsPerByte: Float, bytes: UInt64, alone: Float = .nan) {
    self.language = language
    self.bitsPerByte = bitsPerByte
    self.bytes = bytes
    self.alone = alone
  }
  public static func == (a: LanguageScore, b: LanguageScore) -> Bool {
    a.language == b.language && a.bitsPerByte.bitPattern == b.bitsPerByte.bitPattern && a.bytes == b.bytes && a.alone.bitPattern == b.alone.bitPattern
  }
  public func hash(into h: inout Hasher) { h.combine(language); h.combine(bitsPerByte.bitPattern); h.combine(bytes); h.combine(alone.bitPattern) }

  /// EVALUATION's fields before the signature.
  static func write(version: UInt64, hash: [UInt8], scores: [LanguageScore], to w: inout ByteWriter) {
    w.u64(version); w.raw(hash); w.u8(UInt8(scores.count))
    for s in scores { w.string(s.language); w.u32(s.bitsPerByte.bitPattern); w.u64(s.bytes); w.u32(s.alone.bitPattern) }
  }

  /// What a node signs (Ed25519) for EVALUATION: "AGORA-EVAL-v1" ‖ federation (string) ‖ the message's fields
  /// before the signature (version, hash, count, scores).
  public static func statement(federation: String, version: UInt64, hash: [UInt8], scores: [LanguageScore]) -> [UInt8] {
    var w = ByteWriter()
    w.raw(Array("AGORA-EVAL-v1".utf8)); w.string(federation)
    write(version: version, hash: hash, scores: scores, to: &w)
    return w.bytes
  }
}

public struct LanguageTokens: Equatable, Hashable, Sendable {
  public static let maxCount = 64
  public static let maxName = 32
  public var language: String
  public var tokens: UInt64
  public init(language: String, tokens: UInt64) {
    self.language = language
    self.tokens = tokens
  }

  /// Whether `name` may name a language on the wire: 1 to `maxName` octets of `a`–`z`, `0`–`9`, `-` and `_`
  /// (language tags such as `pt-br`, lowercase). Names are compared as octets.
  public static func isValidName(_ name: String) -> Bool {
    let u = name.utf8
    return !u.isEmpty && u.count <= maxName && u.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x5F }
  }

  /// Whether language name `a` comes before `b` on the wire: octet order (not Swift's string order, which treats
  /// canonically equivalent strings as equal).
  public static func precedes(_ a: String, _ b: String) -> Bool { Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8)) }

  /// A decoded list's next language name: valid, and after the previous one (strictly increasing octet order).
  static func checkName(_ name: String, after previous: String?) throws {
    guard isValidName(name) else { throw DecodeError.invalid("language name \(name.debugDescription) is not 1-32 of a-z, 0-9, '-', '_'") }
    guard previous.map({ precedes($0, name) }) ?? true else { throw DecodeError.invalid("languages must be in strictly increasing byte order") }
  }

  /// A local language name (e.g. a directory name) as the wire allows it: lowercased, other characters than
  /// `a`–`z`, `0`–`9`, `-`, `_` replaced by `_`, cut to `maxName` octets.
  public static func wireName(_ name: String) -> String {
    let mapped = name.lowercased().utf8.map { b -> UInt8 in ((b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x5F) ? b : 0x5F }
    return String(decoding: mapped.prefix(maxName), as: UTF8.self)
  }

  /// Sorted by name (octets), names made wire names, at most `maxCount` (the largest kept): ready for UPLOAD_END.
  public static func canonical(_ counts: [String: UInt64]) -> [LanguageTokens] {
    var merged: [String: UInt64] = [:]
    for (k, v) in counts where !k.isEmpty { merged[wireName(k), default: 0] += v }
    let top = merged.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(maxCount)
    return top.map { LanguageTokens(language: $0.key, tokens: $0.value) }.sorted { precedes($0.language, $1.language) }
  }
}
