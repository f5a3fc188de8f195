import AgoraModel
import Foundation

// What each process reads besides federation.toml (Config.swift): coordinator.toml and a node's <institution>.toml.

/// `coordinator.toml`: the coordinator's own settings.
public struct CoordinatorConfig: Sendable {
  public var path: String
  public var federation: FederationConfig
  public var identity: String
  public var enrolled: String
  public var dataDir: String
  public var bind: String
  /// Where the dashboard listens (host, port), if anywhere; a token it asks for.
  public var dashboard: (host: String, port: Int)?
  public var dashboardToken: String?
  /// The dashboard's "try the model" box (`[dashboard] try_model`, off by default): at most this many new tokens
  /// per completion (`[dashboard] try_model_max_tokens`); nil when off.
  public var tryModelTokens: Int?
  /// How often a round that waits says in the log whom it waits for and announces itself again to the selected
  /// nodes it has heard nothing from (`coordinator.wait_report_seconds`, 60 by default).
  public var waitReportSeconds: Double

  public init(path: String, federationOverrides: [String] = []) throws {
    let f = try TOMLFile(path)
    self.path = path
    federation = try FederationConfig(path: try f.path("coordinator.federation"), overrides: federationOverrides)
    if f.value("coordinator.dashboard") != nil {
      let s = try f.string("coordinator.dashboard")
      guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port), colon > s.startIndex else {
        throw f.fail("coordinator.dashboard", "expected HOST:PORT, e.g. 127.0.0.1:47180")
      }
      dashboard = (String(s[..<colon]), port)
    }
    dashboardToken = f.value("coordinator.dashboard_token") == nil ? nil : try f.string("coordinator.dashboard_token")
    if let d = dashboard, !["127.0.0.1", "localhost", "::1"].contains(d.host) {
      guard let t = dashboardToken, t.count >= 16 else {
        throw f.fail("coordinator.dashboard_token", "the dashboard listens on \(d.host), not on loopback: set a read-only access token of at least 16 characters")
      }
    }
    let tryModel = try f.bool("dashboard.try_model", default: false)
    let tokens = try f.int("dashboard.try_model_max_tokens", default: 64, range: 1...1024)
    if tryModel && dashboard == nil { throw f.fail("dashboard.try_model", "there is no dashboard to try the model on (coordinator.dashboard)") }
    tryModelTokens = tryModel ? tokens : nil
    identity = try f.path("coordinator.identity")
    enrolled = try f.path("coordinator.enrolled")
    dataDir = try f.path("coordinator.data")
    bind = try f.string("coordinator.bind", default: federation.endpoint)
    waitReportSeconds = try f.double("coordinator.wait_report_seconds", default: 60, range: 0.1...3600)
    try f.rejectUnknownKeys()
  }

  /// What must be there before the coordinator starts: the federation's files and at least one enrolled card.
  public func requireFiles() throws {
    try federation.requireFiles()
    try TOMLFile.mustExist(enrolled, directory: true) { ConfigError(file: path, key: "coordinator.enrolled", problem: $0 + " (the directory of the enrolled nodes' cards)") }
    let cards = ((try? FileManager.default.contentsOfDirectory(atPath: enrolled)) ?? []).filter { $0.hasSuffix(".toml") }
    guard !cards.isEmpty else {
      throw ConfigError(file: path, key: "coordinator.enrolled", problem: "\(enrolled) holds no enrolment card (*.toml): nobody could join. Copy each member's card.toml there first")
    }
  }
}

/// `<institution>.toml`: one node's identity, data and compute budget.
public struct NodeConfig: Sendable {
  public var path: String
  public var federation: FederationConfig
  public var name: String
  public var identity: String
  public var data: [String]
  /// A compute donor: no data of its own; it trains on the public shards the coordinator assigns.
  public var donor: Bool
  public var maxStepsPerRound: Int?
  public var threads: Int?
  /// The arithmetic of this node's matrix products (`node.precision`): fp32, or bf16 mixed precision.
  public var precision: Precision
  public var workDir: String
  /// How long the node waits for a coordinator that stopped or restarted before it gives up.
  public var rejoinSeconds: Double
  /// Bits per byte per language of what this institution trains alone (its own baseline), reported with its
  /// evaluations so the federation shows whether joining pays; empty: none.
  public var aloneBitsPerByte: [String: Double]
  /// The declaration file of this institution's training data (`node.declaration`): its sources, each with what
  /// the AI Act's public summary asks; sent signed to the coordinator (metadata only). nil: none (the node may
  /// train; a release names it).
  public var declaration: String?

  public init(path: String, federationOverrides: [String] = []) throws {
    let f = try TOMLFile(path)
    self.path = path
    federation = try FederationConfig(path: try f.path("node.federation"), overrides: federationOverrides)
    name = try f.string("node.name")
    identity = try f.path("node.identity")
    donor = try f.bool("node.donor", default: false)
    data = f.value("node.data") == nil ? [] : try f.paths("node.data")
    if donor {
      guard data.isEmpty else { throw f.fail("node.data", "a donor (node.donor = true) has no data of its own; remove node.data") }
      guard !federation.publicData.isEmpty else {
        throw f.fail("node.donor", "the federation (\(federation.path)) names no public corpus ([public] data) for donors to train on")
      }
    } else {
      guard !data.isEmpty else { throw f.fail("node.data", "needs at least one data directory (or node.donor = true for a compute donor)") }
    }
    maxStepsPerRound = f.value("node.max_steps_per_round") == nil ? nil : try f.int("node.max_steps_per_round", range: 1...1_000_000)
    threads = f.value("node.threads") == nil ? nil : try f.int("node.threads", range: 1...256)
    precision = try f.choice("node.precision", default: federation.precision)
    rejoinSeconds = try f.double("node.rejoin_seconds", default: 3600, range: 1...604_800)
    aloneBitsPerByte = try f.numbersByLanguage("node.alone_bits_per_byte", range: 0...1000)
    declaration = f.value("node.declaration") == nil ? nil : try f.path("node.declaration")
    if donor && declaration != nil { throw f.fail("node.declaration", "a donor trains on the coordinator's public corpus, which the coordinator declares ([public] declaration): remove node.declaration") }
    workDir = try f.path("node.work", default: ".agora/nodes/" + ((path as NSString).lastPathComponent as NSString).deletingPathExtension)
    try f.rejectUnknownKeys()
  }

  /// What must be there before the node starts: the federation's tokenizer (unless the federation learns it)
  /// and the node's data directories.
  public func requireFiles() throws {
    try federation.requireFiles(coordinator: false)
    for (i, d) in data.enumerated() { try TOMLFile.mustExist(d, directory: true) { ConfigError(file: path, key: "node.data[\(i)]", problem: $0) } }
    if let d = declaration { try TOMLFile.mustExist(d, directory: false) { ConfigError(file: path, key: "node.declaration", problem: $0) } }
  }
}
