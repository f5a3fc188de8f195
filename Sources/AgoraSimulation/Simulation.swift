import AgoraRounds
import AgoraCrypto
import AgoraData
import AgoraModel
import AgoraSecureAggregation
import AgoraTensor
import AgoraTrainer
import AgoraTransport
import Foundation

/// A federation simulated in one process: the nodes' trainers, set up exactly as `NodeService` sets them up
/// (settings, seeds from their identities, int8 updates with error feedback), and the coordinator's outer step
/// (token-weighted mean Δ, the same `OuterOptimizer`, the int8 broadcast with the coordinator's stochastic
/// rounding), without transport, sealing or registry. It runs the nodes one after another, so it is for
/// iterating on the training recipe quickly; what it finds must then hold through `agora demo` (a test checks
/// the two agree at tiny scale).
public final class FederationSimulation {
  public struct Node {
    public var name: String
    public var trainer: Trainer
    let errorFeedback: FloatBuffer
    /// With `rounds.overlap_steps`: θ as sent, then the progress since (the next round's first steps).
    let progress: FloatBuffer?
  }

  /// What the recipe may vary beyond federation.toml (the experiments' ablations).
  public struct Recipe: Sendable {
    /// Also score each node's own model after its inner steps (before averaging): a diagnosis of what
    /// averaging keeps of the nodes' progress.
    public var evaluateLocal = false
    /// α of averaging by second moments, in place of `rounds.moment_weighting` (nil: the federation's).
    public var momentWeighting: Float? = nil
    /// Experimental: the moment averaged over blocks of this many values, by `MomentWeightedMean` (1: per value)
    /// instead of the network's `BlockMoments` (nil).
    public var momentBlock: Int? = nil
    /// With `momentWeighting`: scale each node's block factors to mean 1 (it moves its weight between blocks only).
    public var momentNormalise = false
    public init() {}
  }

  public let federation: FederationConfig
  public var recipe: Recipe
  public var nodes: [Node] = []
  public let params: FloatBuffer
  let outer: OuterOptimizer
  /// With `rounds.broadcast = "int4"`: the coordinator's rounding error carried into the next step.
  let broadcastResidual: FloatBuffer?
  let layout: ParameterLayout
  /// Per node, V·q of the counts it would send (`rounds.embedding_rows = "token_counts"`; `EmbeddingRowWeights`).
  var relative: [[Float]?] = []
  let evaluator: (GPT, Evaluator)?

  public init(nodeConfigs: [NodeConfig], recipe: Recipe = Recipe()) throws {
    guard let first = nodeConfigs.first else { throw ConfigError(file: "-", key: "-", problem: "no node configurations") }
    let fed = first.federation
    guard fed.fineTune == nil else {
      throw ConfigError(file: fed.path, key: "finetune", problem: "agora simulate runs pre-training federations; a fine-tuning federation runs through its coordinator and nodes (agora demo --finetune, scripts/finetune-experiment)")
    }
    federation = fed
    self.recipe = recipe
    let tokenizer = try Tokenizer(contentsOf: fed.tokenizer)
    let mc = try fed.modelConfig(tokenizer: tokenizer)
    let layout = ParameterLayout(mc)
    self.layout = layout
    params = FloatBuffer(count: layout.count)
    GPT.initialise(params, layout: layout, seed: fed.seed)
    if let pilot = try fed.pilot() { params.copy(from: pilot.parameters) }
    if fed.warmStartSteps > 0 {
      _ = try WarmStart.train(params, fed: fed, tokenizer: tokenizer, cacheDir: NSTemporaryDirectory() + "agora-simulation-public-\(fnv1a(fed.tokenizer))",
                              log: { print($0) })
    }
    outer = OuterOptimizer(kind: fed.outerOptimizer, count: params.count, lr: Float(fed.outerLR), momentum: Float(fed.outerMomentum))
    broadcastResidual = fed.broadcast == .int4 ? FloatBuffer(count: params.count) : nil
    for c in nodeConfigs where !c.donor {
      let identity = try Identity.load(from: c.identity)
      var s = fed.trainSettings
      s.model = mc
      s.seed = fed.seed ^ fnv1a(identity.card.fingerprint)
      let corpus = try TokenizedCorpus(sources: try LanguageSource.discover(c.data), tokenizer: tokenizer, tokenizerPath: fed.tokenizer,
                                       cacheDir: c.workDir + "/cache")
      let trainer = try Trainer(settings: s, tokenizer: tokenizer, corpus: corpus)
      if fed.restrictedSoftmax { trainer.restrictSoftmaxToCorpus() }
      nodes.append(Node(name: c.name, trainer: trainer, errorFeedback: FloatBuffer(count: params.count),
                        progress: fed.overlapSteps > 0 ? FloatBuffer(count: params.count) : nil))
      relative.append(fed.embeddingRows == .token_counts
        ? EmbeddingRowWeights.relative(counts: EmbeddingRowWeights.sentCounts(corpus.tokenCounts(vocabSize: mc.vocabSize), minimum: fed.tokenCountMinimum),
                                       rows: mc.vocabSize) : nil)
    }
    if !fed.evalData.isEmpty {
      let corpus = try TokenizedCorpus(sources: try LanguageSource.discover(fed.evalData), tokenizer: tokenizer, tokenizerPath: fed.tokenizer,
                                       cacheDir: NSTemporaryDirectory() + "agora-simulation-eval-\(fnv1a(fed.tokenizer))")
      evaluator = (try GPT(config: mc, batch: 8, sequence: mc.contextLength, seed: 0), Evaluator(corpus: corpus, tokenizer: tokenizer, maxWindows: fed.evalWindows))
    } else {
      evaluator = nil
    }
  }

  /// Inner steps of round `r` (1-based).
  func innerSteps(round r: Int) -> Int { federation.innerSteps(round: r) }

  /// Bits per byte of the current θ per language.
  public func evaluate() throws -> [(String, Double)] {
    guard let (model, ev) = evaluator else { return [] }
    model.parameters.copy(from: params)
    return try ev.bitsPerByte(model: model)
  }

  /// Each node's own model after the last round's inner steps: mean bits per byte on its own languages and on
  /// all (filled when `recipe.evaluateLocal`).
  public private(set) var local: [(node: String, own: Double, all: Double)] = []
  /// With averaging by second moments: each node's block factors this round, summarised (as the coordinator logs them).
  public private(set) var factorSummaries: [String] = []

  /// One round: every node trains from θ, sends its (quantised) Δ; θ takes the outer step. Returns the nodes'
  /// last losses.
  @discardableResult
  public func round(_ r: Int) throws -> [Float] {
    local = []
    factorSummaries = []
    let fed = federation
    let sum = FloatBuffer(count: params.count)
    let delta = FloatBuffer(count: params.count)
    var weights = 0.0
    var losses: [Float] = []
    let alpha = recipe.momentWeighting.map(Double.init) ?? fed.momentWeighting
    // Averaging by second moments as the coordinator does it (BlockMoments), or an experiment's variant.
    let blocks = alpha > 0 && recipe.momentBlock == nil
    var rows = EmbeddingRowWeights(offset: layout.wte, rows: layout.config.vocabSize, width: layout.config.channels, parameters: blocks ? params.count : nil)
    var ring = try secureRing(round: r)
    let moments = recipe.momentBlock.flatMap { b in alpha > 0 ? MomentWeightedMean(count: params.count, skip: rows.embedding, alpha: Float(alpha), block: b,
                                                                                   normalise: recipe.momentNormalise) : nil }
    for (k, node) in nodes.enumerated() {
      let t = node.trainer
      // Overlap as a node runs it when the round is announced after exactly `overlap_steps` steps: the round's
      // first steps were trained from θ as sent, and that progress goes on top of the new version.
      let ahead = r > 1 ? node.progress : nil
      fed.beginRound(t, at: params, keepMoments: r == 1 || ahead != nil)
      if let ahead { t.model.parameters.add(ahead) }
      var loss: Float = 0
      for _ in (ahead == nil ? 0 : fed.overlapSteps)..<innerSteps(round: r) { loss = try t.step().loss }
      losses.append(loss)
      if recipe.evaluateLocal, let (model, ev) = evaluator {
        model.parameters.copy(from: t.model.parameters)
        let all = try ev.bitsPerByte(model: model)
        let own = all.filter { t.corpus.languages.contains($0.0) }
        func mean(_ x: [(String, Double)]) -> Double { x.isEmpty ? .nan : x.map(\.1).reduce(0, +) / Double(x.count) }
        local.append((node.name, mean(own), mean(all)))
      }
      delta.store(params, minus: t.model.parameters)
      let w = Double(innerSteps(round: r) * t.model.B * t.model.T)
      if let encoding = ring?.encoding {
        // Secure aggregation's arithmetic as a node and the coordinator run it, without the masks (they cancel in
        // the sum): Δ plus the error feedback in the ring, the rest kept as the new error feedback.
        delta.add(node.errorFeedback)
        let payload = try encoding.encode(delta.buffer, fraction: 1, relative: relative[k], party: nil, seed: fed.seed &+ UInt64(r) << 32 &+ UInt64(k))
        node.errorFeedback.copy(from: delta)
        try sum.pointer.withMemoryRebound(to: UInt32.self, capacity: sum.count) { words in
          try payload.withUnsafeBytes { try encoding.codec.addPacked(try encoding.packed($0, count: sum.count), into: UnsafeMutableBufferPointer(start: words, count: sum.count)) }
        }
        encoding.add(fraction: 1, relative: relative[k], to: &ring!.totals)
      } else {
        let format = fed.compression.format
        let payload = DeltaCodec.encode(UnsafeBufferPointer(delta.buffer), format: format, errorFeedback: format.quantised ? node.errorFeedback.buffer : nil)
        try payload.withUnsafeBytes {
          if blocks {
            // As the coordinator folds an update that carries its moments (RoundCollector).
            let sent = BlockMoments.trailer(UnsafeBufferPointer(t.optimizer.v.buffer))
            let (_, m) = try (Array($0) + sent).withUnsafeBytes { try BlockMoments.split($0, count: sum.count) }
            let f = BlockMoments.factors(m, alpha: alpha, skip: rows.embedding, count: sum.count)
            try rows.addWeighted($0, format: format, count: sum.count, weight: w, factors: f, into: sum.pointer)
            factorSummaries.append("\(node.name): " + BlockMoments.summary(f))
          } else {
            try DeltaCodec.decode($0, into: sum.pointer, count: sum.count, mode: .add(Float(w)))
          }
          try rows.fold($0, format: format, count: sum.count, weight: w, relative: relative[k], into: sum.pointer)
          try moments?.add($0, weight: Float(w), moments: t.optimizer.v)
        }
      }
      weights += w
      if let sent = node.progress, r < fed.rounds {
        sent.copy(from: t.model.parameters)
        fed.forgetMoments(t)
        for _ in 0..<fed.overlapSteps { _ = try t.step() }
        sent.store(t.model.parameters, minus: sent)
      }
    }
    if let ring {
      ring.encoding.decode(UnsafeMutableRawPointer(sum.pointer), count: sum.count, totals: ring.totals)
    } else {
      rows.finish(sum.pointer, count: sum.count, weightTotal: weights)
      moments?.finish(sum)
    }
    outer.step(sum)
    if let format = fed.broadcast.patchFormat {
      // As the coordinator's VersionStep makes the patch: int8 rounded stochastically, int4 with error feedback.
      let patch = DeltaCodec.encode(UnsafeBufferPointer(sum.buffer), format: format, errorFeedback: broadcastResidual?.buffer,
                                    rounding: DeltaCodec.patchRounding(seed: fed.seed, round: r))
      try patch.withUnsafeBytes { try DeltaCodec.decode($0, into: params.pointer, count: params.count, mode: .subtract) }
    } else {
      let (p, s) = (params.pointer, sum.pointer)
      for i in 0..<params.count { p[i] -= s[i] }
    }
    return losses
  }

  /// With `rounds.secure_aggregation`: round r's encoding as the coordinator announces it (its range, the ring of
  /// its participants, the rows' totals by counts) and the survivors' factors, to be added up.
  func secureRing(round r: Int) throws -> (encoding: SecureEncoding, totals: SecureEncoding.Totals)? {
    let fed = federation
    guard fed.secureAggregation else { return nil }
    guard fed.dpClip == 0 else { throw ConfigError(file: fed.path, key: "rounds.dp_clip", problem: "the simulation does not add differential privacy's noise") }
    let rowTotals = fed.embeddingRows == .token_counts ? SecureEncoding.rowTotals(relative, rows: layout.config.vocabSize) : nil
    let encoding = try SecureEncoding(bits: fed.secureAggregationRing.bits(participants: nodes.count), participants: nodes.count,
                                      range: fed.secureRange(round: r, participants: nodes.count), rowTotals: rowTotals,
                                      rows: (layout.wte, layout.config.vocabSize, layout.config.channels))
    return (encoding, encoding.totals())
  }
}
