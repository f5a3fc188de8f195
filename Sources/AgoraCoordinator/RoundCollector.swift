import AgoraRounds
import AgoraRegistry
import AgoraTensor
import AgoraText
import AgoraTransport
import AgoraWire
import Foundation

/// One round's intake: it consumes the uploads the receiver verifies (staged in `staging`), puts each update
/// through the acceptance rule and the score, folds accepted ones into the running weighted sum, and keeps the
/// round's tallies and contributions. A new collector is made for every round; the coordinator reads its
/// tallies when the round closes.
final class RoundCollector: UploadConsumer {
  /// What the checks of this round need to know of the federation.
  struct Settings {
    var round: UInt64
    var format: DeltaFormat
    var innerSteps: Int
    var batch: Int
    var context: Int
    var learningRate: Double
    var stalenessExponent: Double
    var score: Bool
    /// This round's own inner steps (`innerSteps` is the most any update taken this round may have run).
    var roundSteps: Int = 0
    /// Differential privacy's clip norm (0: off): each update is scaled down to it and every node weighs 1.
    var dpClip: Double = 0
    /// α of averaging by second moments (0: off); updates then carry their moments after Δ (`BlockMoments`).
    var momentWeighting: Double = 0
    /// How the mean weighs updates: by their tokens, or each the same (`rounds.weigh_by`).
    var weighBy: FederationConfig.WeighBy = .tokens
  }

  let settings: Settings
  let staging: UpdateStaging
  let sum: FloatBuffer
  let acceptance: AcceptanceRule
  let scorer: UpdateScorer?
  /// The kept patch of the last outer step (for the cosine check), if there is one.
  let lastStep: String?
  /// Names and roles of the round's selected nodes; `sessions` names the others (a late update's node).
  let names: [String: (name: String, donor: Bool)]
  let sessions: SessionTable
  /// θ's intact version blob, once written (an fp32 update is staged in θ's memory then), or nil.
  let currentBlob: () -> String?
  let log: (String) -> Void
  let notify: (CoordinatorEvent) -> Void
  /// The embedding rows' weights so far (what turns `sum` into the mean), and each node's V·q (its COUNTS; nil for
  /// every node unless `rounds.embedding_rows = "token_counts"`, and then the rows weigh like every parameter).
  private(set) var rows: EmbeddingRowWeights
  let relative: (String) -> [Float]?
  /// The round's secure aggregation (nil: updates are opened one by one).
  var secure: SecureRoundState? = nil

  // The round's tallies.
  private(set) var weightTotal = 0.0
  private(set) var tokens: UInt64 = 0
  private(set) var bytesIn: UInt64 = 0
  private(set) var losses: [Double] = []
  /// Norms of every update folded in, late ones included.
  private(set) var norms: [Float] = []
  /// Norms and cosines of the updates made for this round (what the acceptance rule learns from).
  private(set) var onTime: [Float] = []
  private(set) var onTimeCosines: [Float] = []
  /// Late updates folded in (made for an older round).
  private(set) var late = 0
  /// Nodes whose say for this round is in: accepted or refused.
  var done: Set<String> = []
  private(set) var rejected: [String] = []
  private(set) var contributions: [ContributionRecord] = []

  init(settings: Settings, staging: UpdateStaging, sum: FloatBuffer, acceptance: AcceptanceRule, scorer: UpdateScorer?, lastStep: String?,
       names: [String: (name: String, donor: Bool)], sessions: SessionTable, currentBlob: @escaping () -> String?,
       rows: EmbeddingRowWeights, relative: @escaping (String) -> [Float]? = { _ in nil },
       log: @escaping (String) -> Void, notify: @escaping (CoordinatorEvent) -> Void) {
    self.rows = rows
    self.relative = relative
    self.settings = settings
    self.staging = staging
    self.sum = sum
    self.acceptance = acceptance
    self.scorer = scorer
    self.lastStep = lastStep
    self.names = names
    self.sessions = sessions
    self.currentBlob = currentBlob
    self.log = log
    self.notify = notify
  }

  /// Updates made for this round and accepted (what the quorum counts).
  var accepted: Int { norms.count - late }

  func name(_ node: String) -> String { names[node]?.name ?? sessions.session(node)?.name ?? String(node.prefix(12)) }

  // MARK: UploadConsumer

  func uploadStarted(node: String, transfer: UInt64) { staging.begin(node: node) }
  func uploadAborted(node: String, transfer: UInt64) { staging.end(node: node) }

  func uploadRefused(node: String, round: UInt64, reason: String) {
    rejected.append(node)
    notify(.updateRefused(round: Int(settings.round)))
    if round == settings.round { done.insert(node) }
  }

  /// Chunks are decrypted straight into the node's staging slot, in order.
  func destination(node: String, chunk: Int, bytes: Int) -> UnsafeMutableRawBufferPointer? {
    staging.place(node: node, bytes, blob: currentBlob, log: log)
  }

  func chunk(node: String, index: Int, plaintext: UnsafeRawBufferPointer) throws {
    // An update in another format is refused as such from its first chunk (before its length can refuse it:
    // an fp32 update and its moments do not fit where the federation's updates are staged).
    if index == 0, secure == nil, plaintext.count >= DeltaCodec.headerBytes,
       let f = try? DeltaCodec.header(UnsafeRawBufferPointer(rebasing: plaintext.prefix(DeltaCodec.headerBytes)), count: sum.count, checkLength: false),
       f != settings.format {
      throw UpdateRefusal.format(got: f.name, expected: settings.format.name)
    }
    try staging.take(node: node, plaintext)
  }

  func completed(_ c: UploadReceiver.Completed) throws {
    defer { staging.end(node: c.node) }  // its slot is free again
    if let secure { return try completedMasked(c, secure: secure) }
    let s = settings
    let staged = staging.payload(node: c.node)
    // The format first: an update in another one is refused as such, whatever follows it.
    let declared = try DeltaCodec.header(staged, count: sum.count, checkLength: false)
    guard declared == s.format else { throw UpdateRefusal.format(got: declared.name, expected: s.format.name) }
    if s.momentWeighting == 0, staged.count == DeltaCodec.encodedSize(count: sum.count, format: declared) + BlockMoments.trailerBytes(count: sum.count) {
      throw DeltaError.moments("the update carries second moments; this federation does not average by them (rounds.moment_weighting = 0)")
    }
    let (payload, moments) = s.momentWeighting > 0 ? try BlockMoments.split(staged, count: sum.count) : (staged, nil)
    let (format, squared) = try DeltaCodec.validate(payload, count: sum.count)
    let norm = Float(squared.squareRoot())
    guard norm.isFinite else { throw UpdateRefusal.norm(norm, bound: .infinity, basis: "not finite") }
    try acceptance.check(format: format, expected: s.format, norm: norm, steps: Int(c.steps), tokens: c.tokens, innerSteps: s.innerSteps,
                         batch: s.batch, context: s.context, learningRate: s.learningRate, parameters: sum.count)
    // The update's direction against the last outer step (the kept patch), when that check is on (it reads the
    // patch and both vectors once more: about 20 ms per bench-14m update).
    var cosine: Float? = nil
    if acceptance.cosineFactor > 0, let p = lastStep, c.round == s.round {
      let (dot, a2, b2) = try DeltaCodec.similarity(payload, format: format, patchFile: p, count: sum.count)
      if a2 > 0 && b2 > 0 { cosine = Float(dot / (a2.squareRoot() * b2.squareRoot())) }
    }
    log(String(format: "  update of %@ for round %llu: norm %.6g%@, %llu tokens", name(c.node), c.round, norm,
               cosine.map { String(format: ", cosine with the last step %+.4f", $0) } ?? "", c.tokens))
    try acceptance.checkDirection(cosine)
    // The score may refuse it (its own languages got worse), or weigh it down (the collateral check).
    var collateral = 1.0
    if s.score, c.round == s.round, let scorer { collateral = try scorer.score(payload, languages: c.languages.map(\.language), node: name(c.node), log: log) }
    // With differential privacy every node weighs the same (the collateral factor too is left out: a weight that
    // depends on the data would change the sum's sensitivity and what the mean divides by) and its update is
    // clipped to the norm C (the sum's sensitivity to one node is then C, which the round's noise covers).
    let base: Double
    switch s.weighBy {
    case .tokens: base = Double(max(c.tokens, 1))
    case .updates: base = 1
    case .per_step: base = 1 / Double(max(c.steps, 1))
    }
    var w = s.dpClip > 0 ? 1 : base * collateral
    let clip = s.dpClip > 0 ? min(1, Float(s.dpClip) / max(norm, 1e-30)) : 1
    if c.round < s.round {
      // A late update, made on an older version: weighted down by (1 + staleness)^−a.
      let staleness = Double(s.round - c.round)
      w *= pow(1 + staleness, -s.stalenessExponent)
      late += 1
      log(String(format: "  late update of round %llu from %@ applied with staleness %.0f (weight ×%.3f, norm %.6g)", c.round, String(c.node.prefix(12)),
                 staleness, pow(1 + staleness, -s.stalenessExponent), norm))
    }
    if let moments {
      // Averaging by second moments (no differential privacy here: the configuration forbids both at once).
      let f = BlockMoments.factors(moments, alpha: s.momentWeighting, skip: rows.embedding, count: sum.count)
      try rows.addWeighted(payload, format: format, count: sum.count, weight: w, factors: f, into: sum.pointer)
      log("  \(name(c.node))'s second moments: " + BlockMoments.summary(f))
    } else {
      try DeltaCodec.decode(payload, into: sum.pointer, count: sum.count, mode: .add(Float(w) * clip))
    }
    try rows.fold(payload, format: format, count: sum.count, weight: w, relative: s.dpClip > 0 ? nil : relative(c.node), into: sum.pointer)
    weightTotal += w
    tokens += c.tokens
    bytesIn += c.bytes
    losses.append(Double(c.loss))
    norms.append(norm)
    if c.round == s.round {
      onTime.append(norm)
      if let cs = cosine { onTimeCosines.append(cs) }
      done.insert(c.node)
    }
    notify(.updateAccepted(round: Int(s.round), bytes: c.bytes, late: c.round < s.round))
    let who = names[c.node] ?? sessions.session(c.node).map { ($0.name, $0.donor) } ?? (String(c.node.prefix(12)), false)
    var perLanguage = Dictionary(c.languages.map { ($0.language, Int($0.tokens)) }, uniquingKeysWith: +)
    if perLanguage.isEmpty { perLanguage["unknown"] = Int(c.tokens) }
    contributions.append(ContributionRecord(round: Int(s.round), node: c.node, name: who.0, role: who.1 ? .donor : .institution, tokens: Int(c.tokens),
                                            languages: perLanguage, steps: Int(c.steps), seconds: c.cpuSeconds,
                                            bytes: Int(c.bytes), loss: Double(c.loss), weight: w, late: c.round < s.round, norm: Double(norm),
                                            cosine: cosine.map(Double.init)))
  }

  /// A masked update (secure aggregation): folded into the ring sum as it is — nothing of it can be checked but
  /// its form and claims; the unmasked sum is checked instead.
  func completedMasked(_ c: UploadReceiver.Completed, secure: SecureRoundState) throws {
    let s = settings
    guard c.round == s.round, let encoding = secure.encoding, secure.totals != nil, let id = unhex(c.node) else {
      throw UpdateRefusal.claims("a masked update outside its round's secure aggregation")
    }
    guard c.steps >= 1, Int(c.steps) <= s.roundSteps else {
      throw UpdateRefusal.claims("the update claims \(c.steps) steps; the round asked for 1 to \(s.roundSteps)")
    }
    let packed = try encoding.packed(staging.payload(node: c.node), count: sum.count)
    try secure.party.sent(id)
    try sum.pointer.withMemoryRebound(to: UInt32.self, capacity: sum.count) {
      try encoding.codec.addPacked(packed, into: UnsafeMutableBufferPointer(start: $0, count: sum.count))
    }
    // With differential privacy every node weighs the same (fraction 1, rows not by counts).
    let dp = s.dpClip > 0
    encoding.add(fraction: dp ? 1 : Float(c.steps) / Float(max(s.roundSteps, 1)), relative: dp ? nil : relative(c.node), to: &secure.totals!)
    log(String(format: "  masked update of %@ for round %llu folded in (%llu tokens; not opened: secure aggregation)", name(c.node), c.round, c.tokens))
    weightTotal += Double(max(c.tokens, 1))
    tokens += c.tokens
    bytesIn += c.bytes
    losses.append(Double(c.loss))
    norms.append(0)
    done.insert(c.node)
    notify(.updateAccepted(round: Int(s.round), bytes: c.bytes, late: false))
    let who = names[c.node] ?? sessions.session(c.node).map { ($0.name, $0.donor) } ?? (String(c.node.prefix(12)), false)
    var perLanguage = Dictionary(c.languages.map { ($0.language, Int($0.tokens)) }, uniquingKeysWith: +)
    if perLanguage.isEmpty { perLanguage["unknown"] = Int(c.tokens) }
    contributions.append(ContributionRecord(round: Int(s.round), node: c.node, name: who.0, role: who.1 ? .donor : .institution, tokens: Int(c.tokens),
                                            languages: perLanguage, steps: Int(c.steps), seconds: c.cpuSeconds, bytes: Int(c.bytes), loss: Double(c.loss),
                                            weight: Double(max(c.tokens, 1)), late: false, norm: nil, cosine: nil))
  }
}
