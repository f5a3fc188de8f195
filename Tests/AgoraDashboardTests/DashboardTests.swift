@testable import AgoraDashboard
import AgoraRegistry
import AgoraTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// Every route of the dashboard through Hummingbird's router test client (no port opened), on a real
/// registry in a temporary directory.
@Suite struct DashboardTests {
  func registry() throws -> (Registry, LiveState, String) {
    let dir = NSTemporaryDirectory() + "agora-dashboard-\(UUID().uuidString)"
    let store = try Registry(dataDir: dir, federation: "test-fed", create: true)
    try store.upsert(node: NodeRecord(fingerprint: "aa11", name: "Alpha University", institution: "Alpha", contact: "", role: .institution, languages: [],
                                      status: .enrolled, enrolledAt: 0, revokedAt: nil, signKey: "00", curveKey: "00"))
    try store.upsert(node: NodeRecord(fingerprint: "bb22", name: "Volunteer <b>", institution: "Beta", contact: "", role: .donor, languages: [],
                                      status: .enrolled, enrolledAt: 0, revokedAt: nil, signKey: "00", curveKey: "00"))
    try store.commitGenesis(VersionRecord(number: 0, parent: nil, hash: String(repeating: "0", count: 64), optimizer: nil, optimizerKind: "diloco", round: 0,
                                          createdAt: 1, signature: "", bitsPerByte: [("de", 5.0), ("fr", 5.2)], tokens: 0, contributors: 0,
                                          preset: "tiny", config: "{}", tokenizer: "t"))
    for r in 1...3 {
      let cs = [ContributionRecord(round: r, node: "aa11", name: "Alpha University", role: .institution, tokens: 1000, languages: ["de": 1000], steps: 10,
                                   seconds: 2, bytes: 100, loss: 5 - Double(r) * 0.1, weight: 1000, late: false),
                ContributionRecord(round: r, node: "bb22", name: "Volunteer <b>", role: .donor, tokens: 500, languages: ["fr": 500], steps: 10,
                                   seconds: 1, bytes: 100, loss: 5.1 - Double(r) * 0.1, weight: 500, late: false)]
      let round = RoundRecord(number: r, startedAt: Double(r), endedAt: Double(r) + 0.5, selected: 2, accepted: 2, rejected: 0, late: 0,
                              outcome: "version \(r)", version: r)
      try store.commit(version: VersionRecord(number: r, parent: r - 1, hash: String(repeating: "\(r)", count: 64), optimizer: nil, optimizerKind: "diloco",
                                              round: r, createdAt: Double(r), signature: "", bitsPerByte: [("de", 5.0 - Double(r) * 0.2), ("fr", 5.2 - Double(r) * 0.1)],
                                              tokens: 1500, contributors: 2, preset: "tiny", config: "{}", tokenizer: "t"),
                       round: round, contributions: cs)
    }
    // An invitation that enrolled the volunteer, and one still pending (SPEC §2.2).
    let now = Date().timeIntervalSince1970
    try store.record(invitation: InvitationRecord(id: String(repeating: "ab", count: 16), uses: 1, expiresAt: now + 3600, createdAt: now,
                                                  inviteKey: "11", token: "secret-token", note: "for Bob"))
    try store.record(invitation: InvitationRecord(id: String(repeating: "cd", count: 16), uses: 3, expiresAt: now + 3600, createdAt: now + 1,
                                                  inviteKey: "22", token: "secret-token-2", note: ""))
    _ = try store.redeem(invitation: String(repeating: "ab", count: 16), node: NodeRecord(fingerprint: "cc33", name: "Invited <i>", institution: "donor",
                         contact: "", role: .donor, languages: [], status: .enrolled, enrolledAt: now, revokedAt: nil, signKey: "01", curveKey: "02"),
                         card: "card", address: "tcp://10.0.0.9:4000", at: now)
    let live = LiveState(federation: "test-fed")
    live.update {
      $0.round = 4; $0.expected = 2; $0.received = 1; $0.deadline = Date().timeIntervalSince1970 + 30; $0.version = 3
      $0.nodes = [.init(fingerprint: "aa11", name: "Alpha University", donor: false, lastSeen: Date().timeIntervalSince1970)]
    }
    return (store, live, dir)
  }

  @Test func everyRouteAnswers() async throws {
    let (store, live, dir) = try registry()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let metrics = FederationMetrics()
    metrics.updatesReceived.increment(by: Int64(7))
    metrics.latestVersion.set(Double(3))
    let app = Application(router: Dashboard.router(store: store, live: live, token: nil, metrics: metrics,
                                                   modelCard: { n in guard n <= 3 else { throw RegistryError.notFound("no version \(n)") }; return "# card \(n)" }))
    try await app.test(.router) { client in
      try await client.execute(uri: "/", method: .get) { r in
        #expect(r.status == .ok)
        #expect(r.headers[.contentType]?.hasPrefix("text/html") == true)
        let page = String(buffer: r.body)
        #expect(page.contains("<table id=\"rounds\"") && page.contains("plots/bits-per-byte.svg") && page.contains("<table id=\"invitations\""))
        #expect(!page.contains("http://") && !page.contains("https://"), "nothing is fetched from elsewhere")
      }
      try await client.execute(uri: "/api/v1/overview", method: .get) { r in
        let o = try JSONDecoder().decode(Overview.self, from: Data(buffer: r.body))
        #expect(o.live.round == 4 && o.live.received == 1 && o.rounds == 3 && o.versions.first?.number == 3)
      }
      try await client.execute(uri: "/api/v1/nodes", method: .get) { r in
        let nodes = try JSONDecoder().decode([NodeRow].self, from: Data(buffer: r.body))
        #expect(nodes.map(\.name) == ["Alpha University", "Volunteer <b>", "Invited <i>"], "leaderboard by tokens")
        #expect(nodes[0].tokens == 3000 && nodes[0].roundsJoined == 3 && nodes[0].connected && nodes[0].languages == ["de"])
        #expect(nodes[1].role == .donor && !nodes[1].connected && nodes[1].cpuSeconds == 3)
      }
      try await client.execute(uri: "/api/v1/invitations", method: .get) { r in
        let body = String(buffer: r.body)
        let inv = try JSONDecoder().decode([InvitationRow].self, from: Data(buffer: r.body))
        #expect(inv.map(\.id) == ["cdcdcdcd", "abababab"] && inv.map(\.status) == ["pending", "used"], "\(body)")
        #expect(inv[1].donors.map(\.name) == ["Invited <i>"] && inv[1].used == 1)
        #expect(!body.contains("secret-token") && !body.contains("Bob") && !body.contains("\"11\""), "never the token, key or note: \(body)")
      }
      try await client.execute(uri: "/api/v1/rounds", method: .get) { r in
        let rounds = try JSONDecoder().decode([RoundRecord].self, from: Data(buffer: r.body))
        #expect(rounds.map(\.number) == [1, 2, 3])
      }
      try await client.execute(uri: "/api/v1/versions", method: .get) { r in
        let versions = try JSONDecoder().decode([VersionRecord].self, from: Data(buffer: r.body))
        #expect(versions.map(\.number) == [0, 1, 2, 3])
      }
      try await client.execute(uri: "/api/v1/versions/2", method: .get) { r in
        let d = try JSONDecoder().decode(Dashboard.VersionDetail.self, from: Data(buffer: r.body))
        #expect(d.version.number == 2 && d.lineage == [2, 1, 0] && d.signatureValid == nil)
        #expect(d.summary.contributors.count == 2 && d.summary.tokensPerLanguage == ["de": 2000, "fr": 1000] && d.summary.rounds == [1, 2])
      }
      try await client.execute(uri: "/api/v1/versions/99", method: .get) { r in #expect(r.status == .notFound) }
      try await client.execute(uri: "/api/v1/versions/2/card", method: .get) { r in #expect(r.status == .ok && String(buffer: r.body) == "# card 2") }
      try await client.execute(uri: "/api/v1/versions/9/card", method: .get) { r in #expect(r.status == .notFound) }
      try await client.execute(uri: "/api/v1/versions/x", method: .get) { r in #expect(r.status == .badRequest) }
      // Each version's public summary of training content: every section, in Markdown or as JSON.
      try await client.execute(uri: "/api/v1/versions/2/training-content", method: .get) { r in
        let md = String(buffer: r.body)
        #expect(r.status == .ok && r.headers[.contentType]?.hasPrefix("text/markdown") == true)
        #expect(md.contains("version 2") && md.contains("### 2.2.1 ") && md.contains("### 3.2 "), "\(md.prefix(300))")
      }
      try await client.execute(uri: "/api/v1/versions/2/training-content?format=json", method: .get) { r in
        let o = try JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [String: Any]
        #expect(o?["2.3"] != nil && (o?["agora"] as? [String: Any])?["version"] as? Int == 2)
      }
      try await client.execute(uri: "/api/v1/versions/99/training-content", method: .get) { r in #expect(r.status == .notFound) }
      try await client.execute(uri: "/plots/bits-per-byte.svg", method: .get) { r in
        let svg = String(buffer: r.body)
        #expect(r.headers[.contentType] == "image/svg+xml")
        #expect(svg.hasPrefix("<svg") && svg.components(separatedBy: "<polyline").count == 3, "one line per language")
      }
      try await client.execute(uri: "/plots/loss.svg", method: .get) { r in
        #expect(String(buffer: r.body).contains("<polyline"))
      }
      try await client.execute(uri: "/metrics", method: .get) { r in
        let text = String(buffer: r.body)
        #expect(r.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
        #expect(text.contains("agora_updates_received_total 7") && text.contains("agora_latest_version 3.0") || text.contains("agora_latest_version 3"), "\(text)")
        #expect(text.contains("# TYPE agora_round_duration_seconds histogram") && text.contains("agora_nodes_connected"))
      }
    }
  }

  /// A fine-tuning federation's overview names the base its versions adapt and the adapter (issue #34).
  @Test func aFineTuningFederationsOverviewNamesBaseAndAdapter() async throws {
    let dir = NSTemporaryDirectory() + "agora-dashboard-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let store = try Registry(dataDir: dir, federation: "tune", create: true)
    var genesis = VersionRecord(number: 0, parent: nil, hash: String(repeating: "0", count: 64), optimizer: nil, optimizerKind: "fedavg", round: 0,
                                createdAt: 1, signature: "", bitsPerByte: [], tokens: 0, contributors: 0, preset: "import:base", config: "{}", tokenizer: "t")
    genesis.base = #"{"architecture":"GPT2LMHeadModel","directory":"base","dtypes":["F32"],"fine_tune":"lora r=16 alpha=32.0 dropout=0.0 targets=c_attn tokens=4096,4097 template=chatml","hash":"blake3:0123456789abcdef0123","notes":[],"parameters":1000,"weights":"ab"}"#
    try store.commitGenesis(genesis)
    let app = Application(router: Dashboard.router(store: store, live: LiveState(federation: "tune"), token: nil, metrics: FederationMetrics(), modelCard: { _ in "" }))
    try await app.test(.router) { client in
      try await client.execute(uri: "/api/v1/overview", method: .get) { r in
        let o = try JSONDecoder().decode(Overview.self, from: Data(buffer: r.body))
        #expect(o.model == "each version is a LoRA adapter on the base base (GPT2LMHeadModel, blake3:0123456789ab…), fine-tuned on chat data: lora r=16 alpha=32.0 dropout=0.0 targets=c_attn tokens=4096,4097 template=chatml", "\(o.model ?? "nil")")
      }
    }
    // A federation of its own model says nothing of a base.
    let (plain, live, plainDir) = try registry()
    defer { try? FileManager.default.removeItem(atPath: plainDir) }
    #expect(try Dashboard.overview(plain, live).model == nil)
  }

  @Test func aTokenGuardsEveryRoute() async throws {
    let (store, live, dir) = try registry()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let app = Application(router: Dashboard.router(store: store, live: live, token: "s3cret"))
    try await app.test(.router) { client in
      for uri in ["/", "/metrics", "/api/v1/overview", "/api/v1/nodes", "/api/v1/invitations", "/api/v1/rounds", "/api/v1/versions", "/api/v1/versions/1", "/plots/loss.svg", "/plots/bits-per-byte.svg"] {
        try await client.execute(uri: uri, method: .get) { r in #expect(r.status == .unauthorized, "\(uri) without the token") }
        try await client.execute(uri: uri, method: .get, headers: [.authorization: "Bearer wrong"]) { r in #expect(r.status == .unauthorized) }
        try await client.execute(uri: uri, method: .get, headers: [.authorization: "Bearer s3cret"]) { r in #expect(r.status == .ok, "\(uri) with the token") }
        try await client.execute(uri: uri + "?token=s3cret", method: .get) { r in #expect(r.status == .ok) }
      }
    }
  }

  @Test func plotsEscapeNamesAndHandleNoData() {
    #expect(Plots.bitsPerByte([]).contains("no data yet"))
    let v = VersionRecord(number: 1, parent: 0, hash: "h", optimizer: nil, optimizerKind: "diloco", round: 1, createdAt: 0, signature: "",
                          bitsPerByte: [("<x>", 4.0)], tokens: 0, contributors: 0, preset: "tiny", config: "{}", tokenizer: "t")
    let svg = Plots.bitsPerByte([v])
    #expect(svg.contains("&lt;x&gt;") && !svg.contains("<x>"))
    // A name with quotes (e.g. an evaluation directory's) cannot leave its attribute and add a handler.
    let hostile = "x\" onfocus=\"alert(1)"
    let w = VersionRecord(number: 1, parent: 0, hash: "h", optimizer: nil, optimizerKind: "diloco", round: 1, createdAt: 0, signature: "",
                          bitsPerByte: [(hostile, 4.0)], tokens: 0, contributors: 0, preset: "tiny", config: "{}", tokenizer: "t")
    let svg2 = Plots.bitsPerByte([w])
    #expect(!svg2.contains("onfocus=\"") && svg2.contains("x&quot; onfocus=&quot;alert(1)"), "\(svg2)")
  }

  /// Names from nodes and files in the model card: no raw HTML (Hugging Face renders it), no broken table.
  @Test func modelCardCellsEscapeHTMLAndMarkdown() {
    let cell = TrainingDataSummary.cell("<img src=x onerror=alert(1)> | `x`\nline")
    #expect(!cell.contains("<") && !cell.contains("\n") && cell.contains("&lt;img") && cell.contains("\\|") && cell.contains("\\`"), "\(cell)")
  }
}
