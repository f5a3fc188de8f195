import AgoraCoordinator
import AgoraDisclosure
import AgoraRegistry
import AgoraWire
import Foundation
import Hummingbird

/// What the coordinator knows now and the registry does not hold yet: the round in progress and who is
/// connected. A `DashboardObserver` keeps it from the coordinator's events; the dashboard reads snapshots.
public struct LiveStatus: Codable, Sendable, Equatable {
  public typealias Node = ConnectedNode
  public var federation: String
  /// The round being collected, if any.
  public var round: Int?
  public var expected = 0
  public var received = 0
  /// Unix seconds.
  public var deadline: Double?
  public var version = 0
  public var nodes: [Node] = []
  public init(federation: String) { self.federation = federation }
}

public final class LiveState: @unchecked Sendable {
  private let lock = NSLock()
  private var status: LiveStatus
  public init(federation: String) { status = LiveStatus(federation: federation) }
  public var snapshot: LiveStatus { lock.lock(); defer { lock.unlock() }; return status }
  public func update(_ change: (inout LiveStatus) -> Void) { lock.lock(); change(&status); lock.unlock() }
}

/// Keeps the dashboard's live state and Prometheus metrics from a coordinator's events (`agora coordinator`
/// sets it as the coordinator's observer).
public final class DashboardObserver: CoordinatorObserver, @unchecked Sendable {
  public let live: LiveState
  public let metrics: FederationMetrics

  public init(live: LiveState, metrics: FederationMetrics = FederationMetrics()) {
    self.live = live
    self.metrics = metrics
  }

  public func coordinator(_ event: CoordinatorEvent) {
    switch event {
    case .listening:
      break
    case .nodes(let nodes, let version):
      live.update { $0.nodes = nodes; $0.version = version }
      metrics.nodesConnected.set(Double(nodes.count))
      metrics.latestVersion.set(Double(version))
    case .roundStarted(let round, let expected, let deadline):
      live.update { $0.round = round; $0.expected = expected; $0.received = 0; $0.deadline = deadline.timeIntervalSince1970 }
    case .updateAccepted(_, let bytes, let late):
      if !late { live.update { $0.received += 1 } }
      metrics.updatesReceived.increment()
      metrics.bytesIn.increment(by: Int64(bytes))
    case .updateRefused:
      metrics.updatesRejected.increment()
    case .roundEnded(let o):
      live.update { $0.round = nil; $0.deadline = nil; $0.version = o.version }
      metrics.rounds.increment()
      metrics.latestVersion.set(Double(o.version))
      metrics.roundDuration.record(.milliseconds(Int64(o.seconds * 1000)))
    }
  }
}

/// The dashboard as a server: a Hummingbird application, which a coordinator's service group runs (it is a
/// `Service`) beside the rounds.
public enum DashboardServer {
  /// Serves the dashboard of the registry `store` on `host:port`; the coordinator's signing key checks the
  /// versions' signatures and signs the model cards' statements; `tryModelTokens` turns the "try the model" box on.
  public static func application(store: Registry, live: LiveState, metrics: FederationMetrics, host: String, port: Int, token: String?,
                                 signKey: [UInt8], tryModelTokens: Int?, provider: Provider = Provider()) -> Application<RouterResponder<BasicRequestContext>> {
    Application(router: Dashboard.router(store: store, live: live, token: token, metrics: metrics, signKey: signKey,
                                         tryModel: tryModelTokens.map { TryModel(store: store, maxNewTokens: $0) }, provider: provider),
                configuration: .init(address: .hostname(host, port: port), serverName: "agora"))
  }

  public static func url(host: String, port: Int) -> String { "http://\(host.contains(":") ? "[\(host)]" : host):\(port)/" }
}

/// One row of the contributors' leaderboard.
public struct NodeRow: Codable, Sendable {
  public var fingerprint: String
  public var name: String
  public var institution: String
  public var role: NodeRole
  public var languages: [String]
  public var status: NodeStatus
  public var connected: Bool
  public var lastSeen: Double?
  public var roundsJoined: Int
  public var roundsMissed: Int
  public var tokens: Int
  public var cpuSeconds: Double
}

/// One invitation (SPEC §2.2) as the dashboard shows it: never its token, key or note.
public struct InvitationRow: Codable, Sendable {
  /// The first 8 hexadecimal digits of its id (what `agora invite --revoke` takes).
  public var id: String
  /// pending, active, used, expired or revoked.
  public var status: String
  public var uses: Int
  public var used: Int
  public var expiresAt: Double
  public var createdAt: Double
  /// The donors it enrolled: name and card fingerprint.
  public var donors: [InvitedDonor]

  public struct InvitedDonor: Codable, Sendable {
    public var name: String
    public var fingerprint: String
  }

  static func all(_ store: Registry, now: Double = Date().timeIntervalSince1970) throws -> [InvitationRow] {
    let invited = try store.invited()
    return try store.invitations().map { r in
      InvitationRow(id: String(r.id.prefix(8)), status: r.status(at: now), uses: r.uses, used: r.used, expiresAt: r.expiresAt, createdAt: r.createdAt,
                    donors: invited.filter { $0.invitation == r.id }.map { InvitedDonor(name: $0.name, fingerprint: $0.node) })
    }
  }
}

public struct Overview: Codable, Sendable {
  public var live: LiveStatus
  public var rounds: Int
  public var versions: [VersionRecord]
  /// What the versions are, in one line: the base a federation started from (a pilot checkpoint, or a fine-tuning
  /// federation's base and its adapter); nil for a federation that trains a model of its own from the seed.
  public var model: String? = nil
}

/// The coordinator's dashboard: a page of rounds, nodes, versions and per-language plots (server-rendered
/// SVG, a few lines of script that poll the JSON API, no framework, no CDN), the JSON API under `/api/v1`,
/// all read from the registry and the live state. With a token, every route asks for it
/// (`Authorization: Bearer TOKEN` or `?token=TOKEN`).
public enum Dashboard {
  public static func router(store: Registry, live: LiveState, token: String?, metrics: FederationMetrics = FederationMetrics(),
                             signKey: [UInt8]? = nil, modelCard: (@Sendable (Int) throws -> String)? = nil,
                             tryModel: TryModel? = nil, provider: Provider = Provider()) -> Router<BasicRequestContext> {
    let router = Router()
    if let token { router.add(middleware: TokenCheck(token: token)) }
    router.get("/metrics") { _, _ in
      Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: metrics.text())))
    }
    router.get("/api/v1/overview") { _, _ in try overview(store, live) }
    router.get("/api/v1/nodes") { _, _ in try nodes(store, live) }
    router.get("/api/v1/rounds") { _, _ in try store.rounds() }
    router.get("/api/v1/invitations") { _, _ in try InvitationRow.all(store) }
    router.get("/api/v1/versions") { _, _ in try store.versions() }
    router.get("/api/v1/versions/{number}") { _, context -> VersionDetail in
      let n = try context.parameters.require("number", as: Int.self)
      do {
        let v = try store.version(n)
        let lineage = try store.lineage(n)
        let valid = signKey.map { store.signatureValid(v, parentHash: lineage.dropFirst().first?.hash, signKey: $0) }
        return VersionDetail(version: v, lineage: lineage.map(\.number), signatureValid: valid, summary: try TrainingDataSummary.of(n, in: store))
      } catch let e as RegistryError { throw HTTPError(.notFound, message: e.description) }
    }
    router.get("/api/v1/versions/{number}/card") { _, context -> Response in
      let n = try context.parameters.require("number", as: Int.self)
      // The model card `agora export` writes (signed statement checked with `signKey`), unless the caller gives another.
      guard let card = modelCard ?? signKey.map({ key in { n in try VersionExport.modelCard(n, from: store, signKey: key, provider: provider) } }) else {
        throw HTTPError(.notFound, message: "no model cards here")
      }
      do {
        return Response(status: .ok, headers: [.contentType: "text/markdown; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: try card(n))))
      } catch let e as RegistryError { throw HTTPError(.notFound, message: e.description) }
    }
    // Each version's public summary of training content (AI Act Art. 53(1)(d)), as `agora summary` compiles it.
    router.get("/api/v1/versions/{number}/training-content") { request, context -> Response in
      let n = try context.parameters.require("number", as: Int.self)
      do {
        let s = try TrainingContentSummary.of(n, in: store, provider: provider)
        if request.uri.queryParameters.get("format") == "json" {
          return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: try s.json())))
        }
        return Response(status: .ok, headers: [.contentType: "text/markdown; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: s.markdown)))
      } catch let e as RegistryError { throw HTTPError(.notFound, message: e.description) }
    }
    router.get("/plots/bits-per-byte.svg") { _, _ in svg(Plots.bitsPerByte(try store.versions())) }
    router.get("/api/v1/institutions") { _, _ in LanguageStanding.from(try store.evaluations()) }
    router.get("/plots/institutions.svg") { _, _ in svg(Plots.institutions(try store.evaluations())) }
    router.get("/plots/loss.svg") { _, _ in svg(Plots.loss(try store.rounds(), try store.contributions())) }
    router.post("/api/v1/generate") { request, context -> Response in
      guard let tryModel else { throw HTTPError(.notFound, message: "trying the model is off ([dashboard] try_model = true in coordinator.toml)") }
      return try await tryModel.route(request, context)
    }
    router.get("/") { _, _ in
      Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
               body: .init(byteBuffer: ByteBuffer(string: Page.html(federation: live.snapshot.federation, tryModelTokens: tryModel?.maxNewTokens))))
    }
    return router
  }

  public struct VersionDetail: Codable, Sendable, ResponseEncodable {
    public var version: VersionRecord
    public var lineage: [Int]
    /// Whether the coordinator's signature verifies (nil when the dashboard was not given its key).
    public var signatureValid: Bool?
    /// Who trained it on what (the model card's training-data summary).
    public var summary: TrainingDataSummary
  }

  static func svg(_ s: String) -> Response {
    Response(status: .ok, headers: [.contentType: "image/svg+xml"], body: .init(byteBuffer: ByteBuffer(string: s)))
  }

  static func overview(_ store: Registry, _ live: LiveState) throws -> Overview {
    var o = Overview(live: live.snapshot, rounds: try store.lastRound(), versions: Array(try store.versions().suffix(5).reversed()))
    if let b = (try? VersionExport.baseModel(of: 0, in: store)) ?? nil {
      let name = "\(b.nameOrPath ?? b.directory) (\(b.architecture), \(b.hash.prefix(19))…)"
      o.model = b.fineTune.map { ft in
        (ft.hasPrefix("lora") ? "each version is a LoRA adapter on the base " : "each version is the base ") + name + ", fine-tuned on chat data: " + ft
      } ?? "version 0 is the pilot checkpoint " + name
    }
    return o
  }

  static func nodes(_ store: Registry, _ live: LiveState) throws -> [NodeRow] {
    let snap = live.snapshot
    let contributions = try store.contributions()
    let rounds = try store.rounds()
    return try store.nodes().map { n in
      let mine = contributions.filter { $0.node == n.fingerprint }
      let joined = Set(mine.map(\.round))
      let since = rounds.filter { $0.startedAt >= n.enrolledAt - 1 }.map(\.number)
      let l = snap.nodes.first { $0.fingerprint == n.fingerprint }
      return NodeRow(fingerprint: n.fingerprint, name: n.name, institution: n.institution, role: n.role, languages: n.languages, status: n.status,
                     connected: l != nil, lastSeen: l?.lastSeen, roundsJoined: joined.count, roundsMissed: since.filter { !joined.contains($0) }.count,
                     tokens: mine.reduce(0) { $0 + $1.tokens }, cpuSeconds: mine.reduce(0) { $0 + $1.seconds })
    }.sorted { $0.tokens > $1.tokens }
  }
}

extension VersionRecord: ResponseEncodable {}
extension RoundRecord: ResponseEncodable {}
extension ContributionRecord: ResponseEncodable {}
extension Overview: ResponseEncodable {}
extension NodeRow: ResponseEncodable {}
extension InvitationRow: ResponseEncodable {}
extension LanguageStanding: ResponseEncodable {}

/// Refuses requests without the dashboard's token (401).
struct TokenCheck<Context: RequestContext>: RouterMiddleware {
  let token: String
  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
    let bearer = request.headers[.authorization].map { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : "" }
    let query = request.uri.queryParameters.get("token")
    guard bearer == token || query == token else {
      throw HTTPError(.unauthorized, message: "this dashboard needs its access token (Authorization: Bearer TOKEN or ?token=TOKEN)")
    }
    return try await next(request, context)
  }
}

/// Server-side SVG line plots: no script, no external assets.
public enum Plots {
  static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
                        "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]

  /// Bits per byte of every language across versions.
  public static func bitsPerByte(_ versions: [VersionRecord]) -> String {
    var series: [String: [(Double, Double)]] = [:]
    for v in versions { for (l, b) in v.bitsPerByteByLanguage where b.isFinite { series[l, default: []].append((Double(v.number), b)) } }
    return plot(title: "bits per byte by language", x: "version", y: "bits/byte", series: series)
  }

  /// Bits per byte the institutions report on their own validation text, per language and institution, across
  /// versions (federated evaluation).
  public static func institutions(_ records: [EvaluationRecord]) -> String {
    var series: [String: [(Double, Double)]] = [:]
    for e in records where e.bitsPerByte.isFinite { series[e.language + " · " + e.name, default: []].append((Double(e.version), e.bitsPerByte)) }
    return plot(title: "bits per byte on the institutions' own text", x: "version", y: "bits/byte", series: series)
  }

  /// Mean node training loss per round.
  public static func loss(_ rounds: [RoundRecord], _ contributions: [ContributionRecord]) -> String {
    var pts: [(Double, Double)] = []
    for r in rounds {
      let cs = contributions.filter { $0.round == r.number && $0.loss.isFinite }
      if !cs.isEmpty { pts.append((Double(r.number), cs.map(\.loss).reduce(0, +) / Double(cs.count))) }
    }
    return plot(title: "mean node loss by round", x: "round", y: "loss", series: pts.isEmpty ? [:] : ["loss": pts])
  }

  /// Text and attribute values in the SVG and the page: quotes are escaped too (names come from nodes and files).
  static func esc(_ s: String) -> String { Printable.html(s) }

  static func plot(title: String, x: String, y: String, series: [String: [(Double, Double)]]) -> String {
    let (w, h, l, r, t, b) = (640.0, 320.0, 56.0, 110.0, 28.0, 40.0)
    let all = series.values.flatMap { $0 }
    var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" width=\"\(Int(w))\" height=\"\(Int(h))\" role=\"img\" aria-label=\"\(esc(title))\">"
    out += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/><text x=\"\(l)\" y=\"18\" font-family=\"sans-serif\" font-size=\"13\">\(esc(title))</text>"
    guard !all.isEmpty else {
      return out + "<text x=\"\(l)\" y=\"\(h / 2)\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#777\">no data yet</text></svg>"
    }
    var (x0, x1) = (all.map(\.0).min()!, all.map(\.0).max()!)
    var (y0, y1) = (all.map(\.1).min()!, all.map(\.1).max()!)
    if x1 == x0 { x0 -= 1; x1 += 1 }
    if y1 == y0 { y0 -= 0.5; y1 += 0.5 }
    let pad = (y1 - y0) * 0.05
    y0 -= pad; y1 += pad
    func px(_ v: Double) -> Double { l + (v - x0) / (x1 - x0) * (w - l - r) }
    func py(_ v: Double) -> Double { h - b - (v - y0) / (y1 - y0) * (h - t - b) }
    out += "<g stroke=\"#ccc\" font-family=\"sans-serif\" font-size=\"10\" fill=\"#555\">"
    for k in 0...4 {
      let v = y0 + (y1 - y0) * Double(k) / 4
      out += "<line x1=\"\(l)\" x2=\"\(w - r)\" y1=\"\(py(v))\" y2=\"\(py(v))\"/><text x=\"\(l - 6)\" y=\"\(py(v) + 3)\" text-anchor=\"end\" stroke=\"none\">\(String(format: "%.2f", v))</text>"
    }
    let ticks = Array(Set(all.map(\.0))).sorted()
    let step = max(1, ticks.count / 10)
    for (i, v) in ticks.enumerated() where i % step == 0 {
      out += "<text x=\"\(px(v))\" y=\"\(h - b + 14)\" text-anchor=\"middle\" stroke=\"none\">\(Int(v))</text>"
    }
    out += "</g><text x=\"\((l + w - r) / 2)\" y=\"\(h - 6)\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"11\">\(esc(x))</text>"
    for (i, name) in series.keys.sorted().enumerated() {
      let c = palette[i % palette.count]
      let pts = series[name]!.sorted { $0.0 < $1.0 }.map { "\(String(format: "%.1f", px($0.0))),\(String(format: "%.1f", py($0.1)))" }.joined(separator: " ")
      out += "<polyline class=\"series\" data-name=\"\(esc(name))\" fill=\"none\" stroke=\"\(c)\" stroke-width=\"1.6\" points=\"\(pts)\"/>"
      out += "<text x=\"\(w - r + 8)\" y=\"\(t + 12 + Double(i) * 14)\" font-family=\"sans-serif\" font-size=\"11\" fill=\"\(c)\">\(esc(name))</text>"
    }
    return out + "</svg>"
  }
}
