import AgoraCrypto
import AgoraWire
import Foundation
import GRDB

/// An enrolled node.
public struct NodeRecord: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "nodes"
  public var fingerprint: String
  public var name: String
  public var institution: String
  public var contact: String
  /// "institution" or "donor".
  public var role: String
  /// JSON array of the languages it has trained on.
  public var languages: String
  /// "enrolled" or "revoked".
  public var status: String
  public var enrolledAt: Double
  public var revokedAt: Double?
  public var signKey: String
  public var curveKey: String

  public init(fingerprint: String, name: String, institution: String, contact: String, role: String, languages: [String], status: String,
              enrolledAt: Double, revokedAt: Double?, signKey: String, curveKey: String) {
    self.fingerprint = fingerprint
    self.name = name
    self.institution = institution
    self.contact = contact
    self.role = role
    self.languages = jsonArray(languages)
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
}

/// One node's accepted update in one round.
public struct ContributionRecord: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "contributions"
  public var round: Int
  public var node: String
  public var name: String
  public var role: String
  public var tokens: Int
  /// JSON object language → tokens (the languages the node trained on, tokens split evenly when it did not say).
  public var languages: String
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

  public init(round: Int, node: String, name: String, role: String, tokens: Int, languages: [String: Int], steps: Int, seconds: Double,
              bytes: Int, loss: Double, weight: Double, late: Bool, norm: Double? = nil, cosine: Double? = nil) {
    self.norm = norm
    self.cosine = cosine
    self.round = round
    self.node = node
    self.name = name
    self.role = role
    self.tokens = tokens
    self.languages = jsonObject(languages)
    self.steps = steps
    self.seconds = seconds
    self.bytes = bytes
    self.loss = loss
    self.weight = weight
    self.late = late
  }

  public var tokensPerLanguage: [String: Int] { parseObject(languages) }
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
  /// JSON object language → bits per byte on the federation's validation text.
  public var bitsPerByte: String
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
    self.bitsPerByte = jsonObject(Dictionary(uniqueKeysWithValues: bitsPerByte))
    self.meanBitsPerByte = bitsPerByte.isEmpty ? nil : bitsPerByte.map(\.1).reduce(0, +) / Double(bitsPerByte.count)
    self.tokens = tokens
    self.contributors = contributors
    self.preset = preset
    self.config = config
  }

  public var bitsPerByteByLanguage: [String: Double] {
    guard let o = try? JSONSerialization.jsonObject(with: Data(bitsPerByte.utf8)) as? [String: Any] else { return [:] }
    return o.compactMapValues { ($0 as? NSNumber)?.doubleValue }
  }

  enum CodingKeys: String, CodingKey {
    case number, parent, hash, optimizer, round, signature, tokens, contributors, preset, config, tokenizer
    case optimizerKind = "optimizer_kind", createdAt = "created_at", bitsPerByte = "bits_per_byte", meanBitsPerByte = "mean_bits_per_byte"
    case freedAt = "freed_at"
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
}

func jsonArray(_ a: [String]) -> String { "[" + a.sorted().map(jsonString).joined(separator: ",") + "]" }
func jsonObject(_ o: [String: Int]) -> String { "{" + o.keys.sorted().map { "\(jsonString($0)):\(o[$0]!)" }.joined(separator: ",") + "}" }
func jsonObject(_ o: [String: Double]) -> String {
  "{" + o.keys.sorted().map { "\(jsonString($0)):\(o[$0]!.isFinite ? String(format: "%.5f", o[$0]!) : "null")" }.joined(separator: ",") + "}"
}
func parseObject(_ s: String) -> [String: Int] {
  guard let o = try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any] else { return [:] }
  return o.compactMapValues { ($0 as? NSNumber)?.intValue }
}
