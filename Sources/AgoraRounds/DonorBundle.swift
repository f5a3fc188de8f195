import AgoraText
import Foundation
import TOMLKit

/// What ENROLLED carries to a donor enrolled by invitation (SPEC §2.2): the federation's settings as its node
/// reads them, and the federation's tokenizer. JSON: {"federation.toml": TEXT, "tokenizer.json": TEXT}.
public struct DonorBundle: Equatable, Sendable {
  /// The federation's `federation.toml` for the donor's node: the coordinator's, its `--set` overrides applied,
  /// with the paths of what a node holds itself renamed to files beside it (`coordinator.toml`, `tokenizer.json`)
  /// and what only the coordinator holds left out (the members' cards, the evaluation text, the public corpus's
  /// declaration, the provider).
  public var federationTOML: String
  public var tokenizerJSON: [UInt8]

  public static let cardFile = "coordinator.toml"
  public static let tokenizerFile = "tokenizer.json"
  public static let federationFile = "federation.toml"

  public init(federationTOML: String, tokenizerJSON: [UInt8]) {
    self.federationTOML = federationTOML
    self.tokenizerJSON = tokenizerJSON
  }

  /// The bundle of a federation whose coordinator holds `fed` and serves `tokenizer`.
  public init(federation fed: FederationConfig, tokenizer: [UInt8]) throws {
    let t = try TOMLFile(fed.path, overrides: fed.overrides).table
    func section(_ name: String) -> TOMLTable? { t[name]?.table }
    if let f = section("federation") {
      f["coordinator_card"] = DonorBundle.cardFile
      f.remove(at: "members")
      t["federation"] = f
    }
    if let m = section("model") {
      m["tokenizer"] = DonorBundle.tokenizerFile
      m.remove(at: "eval_data")
      t["model"] = m
    }
    if let p = section("public") {
      // A donor gets its shards over the wire; the setting stays (a warm start needs it named), as a placeholder.
      if p.contains(key: "data") { let a = TOMLArray(); a.append("public"); p["data"] = a }
      p.remove(at: "declaration")
      t["public"] = p
    }
    t.remove(at: "provider")
    self.init(federationTOML: t.convert(to: .toml), tokenizerJSON: tokenizer)
  }

  public var json: [UInt8] {
    Array(("{\"federation.toml\":" + jsonString(federationTOML) + ",\"tokenizer.json\":" + jsonString(String(decoding: tokenizerJSON, as: UTF8.self)) + "}").utf8)
  }

  /// Reads ENROLLED's payload; a clear error for anything but the two members as strings.
  public static func parse(_ payload: [UInt8]) throws -> DonorBundle {
    guard let o = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any] else {
      throw ConfigError(file: "ENROLLED", key: "-", problem: "the enrolment bundle is not a JSON object")
    }
    guard let f = o["federation.toml"] as? String, let tok = o["tokenizer.json"] as? String, o.count == 2 else {
      throw ConfigError(file: "ENROLLED", key: "-", problem: "the enrolment bundle must hold exactly \"federation.toml\" and \"tokenizer.json\" as strings")
    }
    return DonorBundle(federationTOML: f, tokenizerJSON: Array(tok.utf8))
  }
}
