import Foundation
import GRDB

/// A declaration of training data as the coordinator received it (SPEC §4.5): the node's signed JSON, kept
/// as it arrived. Rows are append-only: a changed declaration is a new row, and the old one goes on covering the
/// rounds before it.
public struct DeclarationRecord: Codable, Equatable, Sendable, FetchableRecord, PersistableRecord {
  public static let databaseTableName = "declarations"
  public var id: Int64?
  /// The declarant's fingerprint (the coordinator's own for its public corpus).
  public var node: String
  public var name: String
  /// "institution", "donor" or "coordinator".
  public var role: String
  /// BLAKE2b-256 of `json`'s octets, hex.
  public var hash: String
  public var json: String
  /// Ed25519 over `Declaration.statement`, hex, and the key that verified it.
  public var signature: String
  public var signKey: String
  public var recordedAt: Double

  public init(node: String, name: String, role: String, hash: String, json: String, signature: String, signKey: String, recordedAt: Double) {
    self.node = node; self.name = name; self.role = role; self.hash = hash; self.json = json; self.signature = signature; self.signKey = signKey
    self.recordedAt = recordedAt
  }

  enum CodingKeys: String, CodingKey {
    case id, node, name, role, hash, json, signature, signKey = "sign_key", recordedAt = "recorded_at"
  }
}

extension Registry {
  /// Records a declaration unless it is the node's current one (the same hash as its latest); returns whether
  /// it was new. The caller has verified its signature.
  @discardableResult
  public func record(declaration d: DeclarationRecord) throws -> Bool {
    try db.write { db in
      let latest = try DeclarationRecord.filter(Column("node") == d.node).order(Column("recorded_at").desc, Column("id").desc).fetchOne(db)
      guard latest?.hash != d.hash else { return false }
      try d.insert(db)
      try Registry.insertEvent(db, "declaration", d.node, "\(d.name): declaration \(d.hash.prefix(16))" + (latest.map { " replaces \($0.hash.prefix(16))" } ?? ""))
      return true
    }
  }

  /// Every declaration of `node` (or of every node), oldest first.
  public func declarations(node: String? = nil) throws -> [DeclarationRecord] {
    try db.read { db in
      var q = DeclarationRecord.order(Column("recorded_at"), Column("id"))
      if let node { q = q.filter(Column("node") == node) }
      return try q.fetchAll(db)
    }
  }

  /// The declarations of `node` in effect during a round that ran from `start` to `end`: the last one recorded
  /// before it began and every one recorded while it ran (the node's data may have changed in it).
  public static func inEffect(_ all: [DeclarationRecord], from start: Double, to end: Double) -> [DeclarationRecord] {
    let before = all.filter { $0.recordedAt <= start }.last
    return (before.map { [$0] } ?? []) + all.filter { $0.recordedAt > start && $0.recordedAt <= end }
  }
}

extension Registry {
  /// Rewrites a recorded declaration's JSON behind the append-only triggers' back, as someone editing the file
  /// would: for the tests that show such a row is then not used. Never called by Agora itself.
  public func alterDeclarationForTesting(hash: String, json: String) throws {
    try db.write { db in
      try db.execute(sql: "DROP TRIGGER declarations_append_only_update")
      try db.execute(sql: "UPDATE declarations SET json = ? WHERE hash = ?", arguments: [json, hash])
    }
  }

  /// Tries to change a recorded declaration through SQL (it must fail: declarations are append-only). For tests.
  public func tamperWithDeclarationsForTesting() throws {
    try db.write { try $0.execute(sql: "UPDATE declarations SET json = '{}'") }
  }
}
