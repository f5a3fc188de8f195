@testable import AgoraRounds
@testable import AgoraCoordinator
import AgoraTensor
import AgoraTestSupport
import Foundation
import Testing

/// The acceptance rule on its own: bounds hold from the first update, no update of a round moves them, and the
/// median resists a minority.
@Suite struct AcceptanceRuleTests {
  func check(_ rule: AcceptanceRule, norm: Float, steps: Int = 10, tokens: UInt64 = 1000, format: DeltaFormat = .int8) throws {
    try rule.check(format: format, expected: .int8, norm: norm, steps: steps, tokens: tokens, innerSteps: 10, batch: 8, context: 64,
                   learningRate: 1e-3, parameters: 10_000)
  }

  @Test func beforeAnyRoundTheOptimizerBoundsTheNorm() throws {
    let rule = AcceptanceRule()
    // H · lr · √P = 10 · 1e-3 · 100 = 1.
    #expect(throws: Never.self) { try check(rule, norm: 0.99) }
    #expect { try check(rule, norm: 1.01) } throws: { ($0 as? UpdateRefusal).map { if case .norm = $0 { return true } else { return false } } ?? false }
    #expect(throws: UpdateRefusal.empty) { try check(rule, norm: 0) }
  }

  @Test func claimsAndFormatAreChecked() throws {
    let rule = AcceptanceRule()
    #expect(throws: UpdateRefusal.format(got: "fp32", expected: "int8")) { try check(rule, norm: 0.5, format: .fp32) }
    #expect(throws: UpdateRefusal.self) { try check(rule, norm: 0.5, steps: 11) }
    #expect(throws: UpdateRefusal.self) { try check(rule, norm: 0.5, steps: 0) }
    #expect(throws: UpdateRefusal.self) { try check(rule, norm: 0.5, steps: 2, tokens: 2 * 8 * 64 + 1) }
    #expect(throws: Never.self) { try check(rule, norm: 0.5, steps: 2, tokens: 2 * 8 * 64) }
  }

  @Test func thePastMedianBoundsTheNormAndResistsAMinority() throws {
    var rule = AcceptanceRule(factor: 4)
    // Three honest nodes near 0.1 and one that sent zeros-like tiny norms, then one huge: the median stays honest.
    rule.endRound(accepted: [0.1, 0.11, 0.09, 1e-9])
    rule.endRound(accepted: [0.1, 0.12, 0.08, 0.39])
    #expect(rule.bound(innerSteps: 10, learningRate: 1e-3, parameters: 10_000).0 == 4 * 0.1)
    #expect(throws: Never.self) { try check(rule, norm: 0.35) }
    #expect(throws: UpdateRefusal.self) { try check(rule, norm: 0.41) }
    // Only `window` rounds are kept.
    for _ in 0..<3 { rule.endRound(accepted: [1, 1, 1]) }
    #expect(rule.history.count == 3 && rule.bound(innerSteps: 10, learningRate: 1e-3, parameters: 10_000).0 == 4)
  }

  @Test func theDirectionBoundRefusesUpdatesAgainstOrAcrossTheLastStep() throws {
    var rule = AcceptanceRule(cosineFactor: 0.25)
    #expect(throws: Never.self) { try rule.checkDirection(nil) }
    #expect(throws: Never.self) { try rule.checkDirection(0.01) }  // no history: only the sign
    #expect(throws: UpdateRefusal.self) { try rule.checkDirection(-0.01) }
    rule.endRound(accepted: [1, 1, 1], cosines: [0.2, 0.3, 0.4])
    #expect(abs(rule.cosineBound().0 - 0.075) < 1e-6)
    #expect(throws: Never.self) { try rule.checkDirection(0.08) }
    #expect(throws: UpdateRefusal.self) { try rule.checkDirection(0.07) }
    #expect(throws: UpdateRefusal.self) { try rule.checkDirection(.nan) }
  }

  /// The streamed cosine against a patch file equals the one computed in memory.
  @Test(arguments: [DeltaFormat.fp32, .int8])
  func similarityWithAPatchFileMatchesInMemory(format: DeltaFormat) throws {
    let n = 100_003
    let a = (0..<n).map { Float(sin(Double($0) * 0.37)) * 1e-3 }
    let b = (0..<n).map { Float(sin(Double($0) * 0.37 + 0.5)) * 2e-3 }
    let pa = a.withUnsafeBufferPointer { DeltaCodec.encode($0, format: format) }
    let pb = b.withUnsafeBufferPointer { DeltaCodec.encode($0, format: .int8) }
    let path = NSTemporaryDirectory() + "agora-sim-\(UUID().uuidString)"
    defer { unlink(path) }
    FileManager.default.createFile(atPath: path, contents: Data(pb))
    var da = [Float](repeating: 0, count: n), db = [Float](repeating: 0, count: n)
    try pa.withUnsafeBytes { try DeltaCodec.decode($0, into: &da, count: n, mode: .store) }
    try pb.withUnsafeBytes { try DeltaCodec.decode($0, into: &db, count: n, mode: .store) }
    let dot = zip(da, db).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    let a2 = da.reduce(0.0) { $0 + Double($1) * Double($1) }, b2 = db.reduce(0.0) { $0 + Double($1) * Double($1) }
    let s = try pa.withUnsafeBytes { try DeltaCodec.similarity($0, format: format, patchFile: path, count: n, slice: 1024) }
    #expect(abs(s.dot - dot) <= 1e-4 * abs(dot) && abs(s.a2 - a2) <= 1e-4 * a2 && abs(s.b2 - b2) <= 1e-4 * b2, "\(s) vs \(dot), \(a2), \(b2)")
    #expect(s.dot / (s.a2 * s.b2).squareRoot() > 0.8)
    // A file that is not such a patch is a typed error.
    FileManager.default.createFile(atPath: path, contents: Data(pb.dropLast()))
    #expect(throws: DeltaError.self) { _ = try pa.withUnsafeBytes { try DeltaCodec.similarity($0, format: format, patchFile: path, count: n) } }
  }
}

/// The collateral check's bounds (SPEC §7.1, check 6; issue 31's targeted adversary): fixed from the updates that
/// stayed within them in earlier rounds, robust to a minority of adversaries among them, and weighing down an update
/// that harms a language it did not train on far more than recent updates did, in proportion.
@Suite struct CollateralBoundsTests {
  /// Six honest updates' ratios on fi per round, spread like those measured (EXPERIMENTS.md), and two more.
  func round(_ b: inout CollateralBounds, fi: [Double], pl: [Double] = []) {
    for (i, r) in fi.enumerated() { b.passed(["fi": r] .merging(i < pl.count ? ["pl": pl[i]] : [:]) { a, _ in a }) }
    b.newRound()
  }

  @Test func boundsComeAfterTwoRoundsAndRefuseAnOutlier() {
    var b = CollateralBounds(k: 10)
    b.newRound()  // round 1 opens: nothing kept
    #expect(b.bounds.isEmpty && b.violation(["fi": 100]) == nil, "no bound in round 1")
    round(&b, fi: [0.35, 0.42, 0.78, 0.71, -0.07, 0.19, 0.26, 0.07])
    #expect(b.bounds.isEmpty && b.violation(["fi": 100]) == nil, "nor in round 2: one round kept")
    round(&b, fi: [0.05, -0.05, -0.33, 0.11, -0.06, 0.11, 0.9, 0.08])
    // Round 3: m = 0.11 (the pooled median of 16), MAD = 0.165: bound m + max(1.65, 0.5, 0.165) = 1.76.
    let bound = b.bounds["fi"] ?? .nan
    #expect(abs(bound - 1.76) < 1e-9, "\(b.bounds)")
    #expect(b.violation(["fi": 1.7]) == nil, "an honest-looking ratio passes")
    #expect(b.violation(["fi": 5.4, "pl": 0.1])?.language == "fi", "a targeted update's ratio (5 to 60 measured) is above")
    #expect(b.factor(["fi": 1.7, "pl": 0.1]) == 1, "within every bound: full weight")
    #expect(abs(b.factor(["fi": 5.4, "pl": 0.1]) - 1.76 / 5.4) < 1e-12, "above: weighted by bound ÷ ratio")
    #expect(abs(b.factor(["fi": 60]) - 1.76 / 60) < 1e-12, "a strong attack (ratio 60) keeps 3% of its weight")
    #expect(b.violation(["fi": .nan])?.language == "fi" && b.factor(["fi": .nan]) == 0, "a ratio that is not a number: no weight")
    #expect(b.violation(["de": 50]) == nil && b.factor(["de": 50]) == 1, "a language without 3 recent ratios has no bound")
  }

  /// Of several languages above their bounds, the one furthest above (relative to its bound) sets the factor.
  @Test func theWorstLanguageSetsTheFactor() {
    var b = CollateralBounds(k: 10)
    b.newRound()
    for _ in 0..<2 { round(&b, fi: [0.1, 0.2, 0.3, 0.2], pl: [1.0, 1.2, 1.1, 0.9]) }
    let (fi, pl) = (b.bounds["fi"] ?? .nan, b.bounds["pl"] ?? .nan)
    #expect(fi < pl)
    let v = b.violation(["fi": 2 * fi, "pl": 3 * pl])
    #expect(v?.language == "pl" && abs(b.factor(["fi": 2 * fi, "pl": 3 * pl]) - 1.0 / 3) < 1e-12, "\(String(describing: v))")
  }

  /// The demo's round 4 (`agora demo --set rounds.score_collateral=12`, issue 31): the compute donor's honest update
  /// gained 0.66% on its shard's language (el) and raised cs by 4.56%, a ratio of 6.9 against a bound of 3.47.
  /// Refusing it cost an honest donor its round; weighed down, it counts half.
  @Test func aSmallGainIsWeighedDownNotRefused() {
    var b = CollateralBounds(k: 12)
    b.newRound()
    round(&b, fi: [], pl: [])
    for r in [[0.55, 0.30, 0.49, 0.89], [0.65, 0.72, 0.22, 0.68, -0.06], [0.72, 0.60, 0.51, 0.49]] {
      for x in r { b.passed(["cs": x]) }
      b.newRound()
    }
    let bound = b.bounds["cs"] ?? .nan
    let factor = b.factor(["cs": 4.56 / 0.66])
    #expect(factor > 0.3 && factor < 1, "bound \(bound), factor \(factor)")
  }

  /// Two adversaries of eight whose ratios passed in the first rounds (no bounds yet) cannot lift the bound to
  /// their level: the median and its deviation are the honest majority's.
  @Test func aMinorityInTheHistoryCannotMoveTheBound() {
    var b = CollateralBounds(k: 10)
    b.newRound()
    for _ in 0..<3 { round(&b, fi: [0.3, 0.25, 0.35, 0.4, 0.2, 0.3, 45, 52]) }
    let bound = b.bounds["fi"] ?? .nan
    #expect(bound < 2, "bound \(bound)")
    #expect(b.violation(["fi": 5])?.language == "fi")
  }

  @Test func kZeroMeansNoBounds() {
    var b = CollateralBounds(k: 0)
    for _ in 0..<4 { round(&b, fi: [0.1, 0.2, 0.3]) }
    #expect(b.bounds.isEmpty && b.violation(["fi": 1000]) == nil)
  }
}
