import AgoraCrypto
import AgoraWire
import Foundation
import GRDB

/// What a node is to the federation: an institution training on its own text, or a compute donor training on
/// the public shards it is given.
public enum NodeRole: String, Codable, Sendable, DatabaseValueConvertible {
  case institution, donor
}

/// Whether an enrolled node may connect.
public enum NodeStatus: String, Codable, Sendable, DatabaseValueConvertible {
  case enrolled, revoked
}

/// An enrolled node.
public struct NodeRecord: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "nodes"
  public var fingerprint: String
  public var name: String
  public var institution: String
  public var contact: String
  public var role: NodeRole
  /// The languages it has trained on, sorted (a JSON array in the database).
  public var languages: [String]
  public var status: NodeStatus
  public var enrolledAt: Double
  public var revokedAt: Double?
  public var signKey: String
  public var curveKey: String

  public init(fingerprint: String, name: String, institution: String, contact: String, role: NodeRole, languages: [String], status: NodeStatus,
              enrolledAt: Double, revokedAt: Double?, signKey: String, curveKey: String) {
    self.fingerprint = fingerprint
    self.name = name
    self.institution = institution
    self.contact = contact
    self.role = role
    self.languages = languages.sorted()
    self.status = status
    self.enrolledAt = enrolledAt
    self.revokedAt = revokedAt
    self.signKey = signKey
    self.curveKey = curveKey
  }

  /// The same record with the languages `other` already lists.
  public func keepingLanguages(of other: NodeRecord?) -> NodeRecord {
    var n = self
    if let other { n.languages = other.languages }
    return n
  }

  enum CodingKeys: String, CodingKey {
    case fingerprint, name, institution, contact, role, languages, status
    case enrolledAt = "enrolled_at", revokedAt = "revoked_at", signKey = "sign_key", curveKey = "curve_key"
  }
  public enum Columns {
    public static let fingerprint = Column(CodingKeys.fingerprint)
    public static let name = Column(CodingKeys.name)
  }
}

/// One round: its timing, how many nodes were selected and finished, and what came of it.
public struct RoundRecord: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "rounds"
  public var number: Int
  public var startedAt: Double
  public var endedAt: Double
  public var selected: Int
  public var accepted: Int
  public var rejected: Int
  public var late: Int
  /// "version N", "quorum not reached", "stopped".
  public var outcome: String
  public var version: Int?

  public init(number: Int, startedAt: Double, endedAt: Double, selected: Int, accepted: Int, rejected: Int, late: Int, outcome: String, version: Int?) {
    self.number = number
    self.startedAt = startedAt
    self.endedAt = endedAt
    self.selected = selected
    self.accepted = accepted
    self.rejected = rejected
    self.late = late
    self.outcome = outcome
    self.version = version
  }

  enum CodingKeys: String, CodingKey {
    case number, selected, accepted, rejected, late, outcome, version
    case startedAt = "started_at", endedAt = "ended_at"
  }
  public enum Columns {
    public static let number = Column(CodingKeys.number)
  }
}

/// One node's accepted update in one round.
public struct ContributionRecord: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "contributions"
  public var round: Int
  public var node: String
  public var name: String
  public var role: NodeRole
  public var tokens: Int
  /// Tokens per language the node trained on ("unknown" when it did not say; a JSON object in the database).
  public var languages: [String: Int]
  public var steps: Int
  /// CPU-seconds the node reported for the round (training and encoding, all its threads).
  public var seconds: Double
  public var bytes: Int
  public var loss: Double
  public var weight: Double
  public var late: Bool
  /// ‖Δ‖ of the update (nil in registries older than the migration that added it).
  public var norm: Double?
  /// Its cosine with the outer step before its round (nil without one).
  public var cosine: Double?

  enum CodingKeys: String, CodingKey {
    case round, node, name, role, tokens, languages, steps, bytes, loss, weight, late, norm, cosine
    case seconds = "cpu_seconds"
  }
  public enum Columns {
    public static let round = Column(CodingKeys.round)
    public static let node = Column(CodingKeys.node)
  }

  public init(round: Int, node: String, name: String, role: NodeRole, tokens: Int, languages: [String: Int], steps: Int, seconds: Double,
              bytes: Int, loss: Double, weight: Double, late: Bool, norm: Double? = nil, cosine: Double? = nil) {
    self.norm = norm
    self.cosine = cosine
    self.round = round
    self.node = node
    self.name = name
    self.role = role
    self.tokens = tokens
    self.languages = languages
    self.steps = steps
    self.seconds = seconds
    self.bytes = bytes
    self.loss = loss
    self.weight = weight
    self.late = late
  }

  public var tokensPerLanguage: [String: Int] { languages }
}

/// A version of the shared model.
public struct VersionRecord: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "versions"
  public var number: Int
  public var parent: Int?
  /// BLAKE2b-256 of the weights blob, hex: a safetensors file (GPT-2 names, binary32) whose data is the flat
  /// parameter vector in the model's layout.
  public var hash: String
  /// The outer optimizer's state blob (momentum, second moment), hex; nil for FedAvg.
  public var optimizer: String?
  public var optimizerKind: String
  public var round: Int
  public var createdAt: Double
  /// Ed25519 by the coordinator over `VersionStatement`, hex.
  public var signature: String
  /// Bits per byte per language on the federation's validation text (a JSON object in the database).
  public var bitsPerByte: LanguageScores
  public var meanBitsPerByte: Double?
  public var tokens: Int
  public var contributors: Int
  public var preset: String
  /// The model's config.json.
  public var config: String
  /// The tokenizer.json blob, hex.
  public var tokenizer: String
  /// When `agora gc` freed its blobs (the record and its lineage stay).
  public var freedAt: Double? = nil
  /// Client-level differential privacy: the noise multiplier of the round that made this version (the noise
  /// actually in its sum, over the clip norm), and ε at `dpDelta` of its whole lineage (Rényi accountant); nil
  /// without differential privacy.
  public var dpNoise: Double? = nil
  public var dpEpsilon: Double? = nil
  public var dpDelta: Double? = nil
  /// Version 0 of a federation that starts from a pilot checkpoint (`model.init`): where it came from (the
  /// import's base-model record, JSON: hash, directory, name_or_path, license, architecture, dtypes). nil otherwise.
  public var base: String? = nil

  public init(number: Int, parent: Int?, hash: String, optimizer: String?, optimizerKind: String, round: Int, createdAt: Double, signature: String,
              bitsPerByte: [(String, Double)], tokens: Int, contributors: Int, preset: String, config: String, tokenizer: String) {
    self.tokenizer = tokenizer
    self.number = number
    self.parent = parent
    self.hash = hash
    self.optimizer = optimizer
    self.optimizerKind = optimizerKind
    self.round = round
    self.createdAt = createdAt
    self.signature = signature
    self.bitsPerByte = LanguageScores(Dictionary(bitsPerByte, uniquingKeysWith: { a, _ in a }))
    self.meanBitsPerByte = bitsPerByte.isEmpty ? nil : bitsPerByte.map(\.1).reduce(0, +) / Double(bitsPerByte.count)
    self.tokens = tokens
    self.contributors = contributors
    self.preset = preset
    self.config = config
  }

  public var bitsPerByteByLanguage: [String: Double] { bitsPerByte.values }

  enum CodingKeys: String, CodingKey {
    case number, parent, hash, optimizer, round, signature, tokens, contributors, preset, config, tokenizer
    case optimizerKind = "optimizer_kind", createdAt = "created_at", bitsPerByte = "bits_per_byte", meanBitsPerByte = "mean_bits_per_byte"
    case freedAt = "freed_at", dpNoise = "dp_noise", dpEpsilon = "dp_epsilon", dpDelta = "dp_delta", base
  }
  public enum Columns {
    public static let number = Column(CodingKeys.number)
    public static let freedAt = Column(CodingKeys.freedAt)
    public static let tokenizer = Column(CodingKeys.tokenizer)
  }
}

/// A score per language (bits per byte): a JSON object of the finite ones. Reading, a language whose value is
/// null (registries written before typed records stored a non-finite score so) is left out.
public struct LanguageScores: Codable, Equatable, Sendable {
  public var values: [String: Double]
  public init(_ values: [String: Double]) { self.values = values.filter { $0.value.isFinite } }
  public init(from decoder: Decoder) throws {
    values = try decoder.singleValueContainer().decode([String: Double?].self).compactMapValues { $0 }.filter { $0.value.isFinite }
  }
  public func encode(to encoder: Encoder) throws {
    var c = encoder.singleValueContainer()
    try c.encode(values)
  }
}

/// An entry of the append-only event log.
public struct EventRecord: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "events"
  public var id: Int64?
  public var at: Double
  public var kind: String
  public var subject: String
  public var detail: String
  public enum Columns {
    public static let id = Column("id")
  }
}

/// One institution's score of one version on one of its languages (federated evaluation: EVALUATION, SPEC
/// §4.3): bits per byte on `bytes` bytes of its own validation text, and its alone-baseline if it reports one.
/// The signature is the node's, over `LanguageScore.statement` of the whole report.
public struct EvaluationRecord: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "evaluations"
  public var version: Int
  public var node: String
  public var name: String
  public var language: String
  public var bitsPerByte: Double
  public var bytes: Int
  public var alone: Double?
  public var signature: String
  public var at: Double

  public init(version: Int, node: String, name: String, language: String, bitsPerByte: Double, bytes: Int, alone: Double?, signature: String, at: Double) {
    self.version = version
    self.node = node
    self.name = name
    self.language = language
    self.bitsPerByte = bitsPerByte
    self.bytes = bytes
    self.alone = alone
    self.signature = signature
    self.at = at
  }

  enum CodingKeys: String, CodingKey {
    case version, node, name, language, bytes, alone, signature, at
    case bitsPerByte = "bits_per_byte"
  }
  public enum Columns {
    public static let version = Column(CodingKeys.version)
    public static let language = Column(CodingKeys.language)
    public static let node = Column(CodingKeys.node)
  }
}

/// Per language and reporting institution: the latest version's score, the best one and its version, and the
/// institution's alone-baseline (what `agora show`, the model card and the dashboard print).
public struct LanguageStanding: Codable, Equatable, Sendable {
  public var language: String
  public var name: String
  public var node: String
  public var latestVersion: Int
  public var latest: Double
  public var bestVersion: Int
  public var best: Double
  public var alone: Double?

  /// From evaluation records (of any versions, up to some version), one standing per (language, node).
  public static func from(_ records: [EvaluationRecord]) -> [LanguageStanding] {
    var out: [String: LanguageStanding] = [:]
    for r in records.sorted(by: { ($0.version, $0.at) < ($1.version, $1.at) }) {
      let key = r.language + "\u{0}" + r.node
      var s = out[key] ?? LanguageStanding(language: r.language, name: r.name, node: r.node, latestVersion: r.version, latest: r.bitsPerByte,
                                           bestVersion: r.version, best: r.bitsPerByte, alone: r.alone)
      s.latestVersion = r.version
      s.latest = r.bitsPerByte
      if r.bitsPerByte < s.best { s.best = r.bitsPerByte; s.bestVersion = r.version }
      if let a = r.alone { s.alone = a }
      out[key] = s
    }
    return out.values.sorted { ($0.language, $0.name) < ($1.language, $1.name) }
  }
}
