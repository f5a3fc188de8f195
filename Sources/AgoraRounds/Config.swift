import AgoraDisclosure
import AgoraModel
import AgoraSecureAggregation
import Foundation

/// A setting that is wrong or missing: the file, the key and what was expected.
public struct ConfigError: Error, Equatable, CustomStringConvertible {
  public let file: String
  public let key: String
  public let problem: String
  public var description: String { "\(file): \(key): \(problem)" }
  public init(file: String, key: String, problem: String) {
    self.file = file
    self.key = key
    self.problem = problem
  }
}

/// `federation.toml`: what every party of a federation agrees on.
public struct FederationConfig: Sendable {
  public var path: String
  /// The `KEY=VALUE` settings that replaced the file's.
  public var overrides: [String]
  public var id: String
  public var endpoint: String
  public var coordinatorCard: String
  /// The model preset's name, or `import:` and the directory name of the pilot checkpoint (`model.init`).
  public var preset: String
  /// A pilot checkpoint (`model.init`: a GPT2LMHeadModel or LlamaForCausalLM directory, e.g. one written by
  /// `agora model import`) that is version 0: its shape, its tokenizer, its weights. Every member holds a copy;
  /// its hash is part of the model hash each party's JOIN carries, so a member with another copy is refused.
  public var modelInit: String?
  /// `[finetune]`: the federation fine-tunes its base (`model.init`) on the members' chat data, with LoRA
  /// adapters (each version is an adapter on the frozen base) or the whole model; nil: it pre-trains on text.
  public var fineTune: FineTuneTerms?
  /// The nodes' matrix-product arithmetic unless a node says otherwise (`model.precision`, `node.precision`):
  /// a node's local choice, not part of the training terms.
  public var precision: Precision
  /// Where the federation's tokenizer.json is (`model.tokenizer`); with a federated vocabulary, where the
  /// vocabulary phase leaves it (it is learned by the coordinator and fetched by every node).
  public var tokenizer: String
  /// The vocabulary phase (`[tokenizer]`, SPEC §4.4): the tokenizer is learned from count tables the nodes send.
  public var vocabulary: VocabularySettings?
  public var seed: UInt64
  public var rounds: Int
  /// Inner steps of every round after the schedule's (`rounds.inner_steps`).
  public var innerSteps: Int
  /// Inner steps of the first rounds (`rounds.inner_steps_schedule`): round r ≤ count takes `[r − 1]`, later
  /// rounds `innerSteps`. Empty: every round takes `innerSteps`.
  public var innerStepsSchedule: [Int]
  public var batch: Int
  public var learningRate: Double
  public var deadlineSeconds: Double
  public var quorum: Double
  public var outerOptimizer: OuterOptimizer.Kind
  public var outerLR: Double
  public var outerMomentum: Double
  public var compression: CompressionSetting
  public var broadcast: BroadcastSetting
  public var minNodes: Int
  public var evalData: [String]
  public var evalWindows: Int
  /// Directories of public text (one per language, holding train.txt) cut into shards for compute donors.
  public var publicData: [String]
  /// Steps the coordinator trains version 0 on the public corpus before round 1 (0: version 0 is the seeded
  /// initialisation).
  public var warmStartSteps: Int
  /// Sequences per warm-start step (default: `rounds.batch`).
  public var warmStartBatch: Int
  public var shardBytes: Int
  /// The coordinator's declaration of its public corpus (`public.declaration`), a declaration file like a node's.
  public var publicDeclaration: String?
  /// `[provider]`: who places the model on the market, its name and licence (the training-content summary's 1.1, 1.2).
  public var provider: Provider
  /// What happens to an update that arrives after its round closed.
  public var lateUpdates: LateUpdates
  /// `rounds.inner_seconds` (0: off): rounds of time, not of steps. A node trains from the moment it hears the
  /// round for this many seconds — or until the round's `inner_steps`, now a cap, if that comes first — and sends
  /// what it trained: a fast machine trains more steps, a slow one fewer, and none waits for the others.
  public var innerSeconds: Double = 0
  /// How the mean weighs updates (`rounds.weigh_by`): by the tokens each claims, each update the same, or each by
  /// one over its steps (`per_step`: the mean of the nodes' per-step directions, as FedNova normalises unequal
  /// local steps, scaled by the harmonic mean of their steps). With rounds of time an update's Δ already holds as
  /// many steps as its node could train, so weighing it by its tokens too would count a fast node's work twice:
  /// `updates` is then the default.
  public var weighBy: WeighBy = .tokens
  public enum WeighBy: String, CaseIterable, Sendable { case tokens, updates, per_step }
  /// A late update's weight is multiplied by (1 + staleness)^−exponent (staleness = rounds late).
  public var stalenessExponent: Double
  /// An update's norm may be at most this many times the median norm of the last rounds' accepted updates.
  public var normBoundFactor: Double
  /// An update's cosine with the last outer step must be at least this times the recent median (and ≥ 0).
  public var cosineBoundFactor: Double
  /// Each update is scored before it is folded in: applied to the current version it must lower the loss on the
  /// evaluation text of the languages it says it trained on (needs `model.eval_data`).
  public var scoreUpdates: Bool
  /// Validation windows per language that score an update.
  public var scoreWindows: Int
  /// How much worse (relative bits per byte) than the current version an update may leave its own languages and
  /// still pass the score: a few windows are a noisy sample, and late in training an honest update can be flat.
  public var scoreTolerance: Double
  /// k of the collateral check: how many median absolute deviations above the recent median collateral ratio an
  /// update may harm a language it did not train on before its weight is taken down by bound ÷ ratio
  /// (`UpdateScorer`; 12 by default, EXPERIMENTS.md "A targeted adversary"; 0: other languages are not scored).
  public var scoreCollateral: Double
  /// Nodes train with a softmax restricted to the tokens their own text contains (FedRS-style): a node does not
  /// push down the tokens of languages it never sees, which averaging would otherwise apply for everyone.
  public var restrictedSoftmax: Bool
  /// What a node keeps of its inner AdamW state from one round to the next: everything (`keep`, as DiLoCo), the
  /// second moment only (`reset_momentum`: the first moment would first pull θ back toward the node's own last
  /// model), or nothing (`reset`).
  public var innerState: InnerState
  public enum InnerState: String, CaseIterable, Sendable { case keep, reset_momentum, reset }
  /// At most this many of a round's inner steps a node trains before the round is announced, while its last
  /// update uploads and the coordinator aggregates; it folds the new version in when it lands (0: no overlap).
  public var overlapSteps: Int
  /// Uploads the coordinator receives at once, each staged in its own slot (memory: one payload per slot).
  public var concurrentUploads: Int
  /// How the token embedding rows are averaged: with the nodes weighted by their tokens like every other
  /// parameter (`tokens`), or each row with the nodes weighted by how often their text contains its token
  /// (`token_counts`: a node's change to a row it hardly trained on counts for little). With `token_counts`,
  /// institutions send their training text's token counts once per session (COUNTS).
  public var embeddingRows: EmbeddingRows
  /// α of averaging by the nodes' second moments (0: off): every update carries its node's AdamW second moment
  /// per block of 256 values, and outside the embedding each block's mean weighs node k by its tokens times
  /// (its moment there)^α, normalised over its blocks (`BlockMoments`, SPEC §4.2). Default ½, or 0 where the
  /// coordinator cannot read single updates (secure aggregation), with differential privacy, or with fp32 updates.
  public var momentWeighting: Double
  public enum EmbeddingRows: String, CaseIterable, Sendable { case tokens, token_counts }
  /// Validation windows per language on which each institution scores every version it trains on and reports
  /// the figures (EVALUATION, signed); 0: nodes report nothing.
  public var nodeEvalWindows: Int
  /// A node sends a token's count only when its text contains the token at least this often (zero otherwise):
  /// a rare token can identify a document.
  public var tokenCountMinimum: Int
  /// An upload that streams nothing for this long is refused (it would hold the one upload slot).
  public var uploadStallSeconds: Double
  /// Secure aggregation (SPEC §7.2): the coordinator learns only the sum of a round's updates.
  public var secureAggregation: Bool
  /// The ring Z/2^b updates are summed in under secure aggregation: a fixed b, or b grown with the round's
  /// participants so that each node keeps a given precision.
  public var secureAggregationRing: SecureAggregationRing
  /// Neighbours per node (0: every other node up to 8, 2⌈log2 n⌉ beyond).
  public var secureAggregationNeighbours: Int
  /// Shares that rebuild a node's secrets, as a fraction of its neighbours (above half).
  public var secureAggregationThreshold: Double
  /// How long the coordinator waits for key advertisements, for shares, and for the reveals at unmasking.
  public var secureAggregationSetupSeconds: Double
  /// The directory of every member's enrolment card that each party holds itself (`federation.members`): nodes
  /// check key advertisements against it, so the coordinator cannot substitute keys. Needed with secure
  /// aggregation.
  public var members: String?
  /// Client-level differential privacy (DP-FedAvg): each node's update clipped to this L2 norm (0: off) …
  public var dpClip: Double
  /// … and Gaussian noise of standard deviation `dpNoiseMultiplier` × `dpClip` on the round's sum (added by the
  /// coordinator, or by the nodes in equal shares under secure aggregation); nodes weigh equally.
  public var dpNoiseMultiplier: Double
  /// δ at which ε is reported.
  public var dpDelta: Double

  public enum LateUpdates: String, CaseIterable, Sendable { case drop, stale }

  public enum CompressionSetting: String, CaseIterable, Sendable {
    case int8, fp32, int4, fp4
    /// The payload format of updates (DeltaCodec).
    public var format: DeltaFormat { DeltaFormat.allCases.first { $0.name == rawValue }! }
  }
  /// How a new version reaches nodes that hold its parent: an int8 patch (a quarter of the model), an int4
  /// patch (an eighth; the coordinator carries each step's rounding error into the next), or the whole model
  /// (fp32, exact steps).
  public enum BroadcastSetting: String, CaseIterable, Sendable {
    case int8, int4, full
    /// The patch's payload format (nil: whole versions).
    public var patchFormat: DeltaFormat? { self == .int8 ? .int8 : self == .int4 ? .int4 : nil }
  }

  /// A federated vocabulary's settings (`[tokenizer]`).
  public struct VocabularySettings: Sendable {
    /// Tokens, with the 256 bytes and <|endoftext|> (nil: the model preset's).
    public var size: Int? = nil
    public var balance: BPETrainer.Balance = .equalize(rounds: 6, strength: 1)
    /// k and m: a node drops pre-tokens seen fewer times, or in fewer documents, before its table leaves it.
    public var minCount: UInt64 = 5
    public var minDocuments: UInt32 = 2
    /// Gaussian noise on each count before the thresholds (standard deviation; 0: none).
    public var noise: Double = 0
    /// The held-back pre-tokens go out in pieces of this many characters, thresholded in turn (0: not at all;
    /// `PreTokenCounts.thresholded(texts:fragmentLength:…)`).
    public var fragmentLength = 3
    /// Tables from how many nodes the coordinator waits for (nil: every enrolled node).
    public var contributors: Int? = nil
    public var phaseSeconds: Double = 600
    /// At most this many octets of each language's train.txt are counted.
    public var maxBytesPerLanguage = 4_000_000
    public init() {}
  }

  /// `overrides`: `KEY=VALUE` settings that replace the file's (e.g. `rounds.secure_aggregation=true`).
  public init(path: String, overrides: [String] = []) throws {
    let f = try TOMLFile(path, overrides: overrides)
    self.path = path
    self.overrides = overrides
    id = try f.string("federation.id")
    guard !id.isEmpty, id.utf8.count <= 255 else { throw f.fail("federation.id", "must be 1 to 255 bytes") }
    endpoint = try f.string("federation.endpoint")
    guard endpoint.hasPrefix("tcp://") else { throw f.fail("federation.endpoint", "expected tcp://HOST:PORT") }
    coordinatorCard = try f.path("federation.coordinator_card")
    let federated = try f.bool("tokenizer.federated", default: false)
    modelInit = f.value("model.init") == nil ? nil : try f.path("model.init")
    if let dir = modelInit {
      // The pilot checkpoint is version 0 with its own shape and tokenizer: nothing may say otherwise.
      for k in ["model.preset", "model.architecture", "model.tokenizer", "model.warm_start_steps"] where f.value(k) != nil {
        throw f.fail(k, "model.init names a pilot checkpoint, which is version 0 with its own shape, tokenizer and weights: leave \(k) out")
      }
      if federated { throw f.fail("tokenizer.federated", "a pilot checkpoint (model.init) brings its tokenizer: the vocabulary cannot be federated") }
      preset = "import:" + ((dir as NSString).standardizingPath as NSString).lastPathComponent
      tokenizer = (dir as NSString).appendingPathComponent("tokenizer.json")
    } else {
      // `model.architecture = "llama"` turns a GPT-2 preset name into its LLaMA preset (`small` → `llama-small`).
      preset = GPTConfig.presetName(try f.string("model.preset", default: "tiny"), architecture: try f.choice("model.architecture", default: GPTConfig.Architecture.gpt2))
      do { _ = try GPTConfig.preset(preset) } catch { throw f.fail("model.preset", "\(error)") }
      tokenizer = try f.path("model.tokenizer")
    }
    precision = try f.choice("model.precision", default: Precision.fp32)
    fineTune = try FineTuneTerms(f, base: modelInit)
    do {  // read (and checked) whether or not the vocabulary is federated, so that no key of [tokenizer] goes unread
      var v = VocabularySettings()
      v.size = f.value("tokenizer.vocab_size") == nil ? nil : try f.int("tokenizer.vocab_size", range: 257...65_536)
      let b = try f.string("tokenizer.balance", default: "equalize")
      do { v.balance = try BPETrainer.Balance(parsing: b) } catch { throw f.fail("tokenizer.balance", "\(error)") }
      v.minCount = UInt64(try f.int("tokenizer.min_count", default: 5, range: 1...1_000_000))
      v.minDocuments = UInt32(try f.int("tokenizer.min_documents", default: 2, range: 1...1_000_000))
      v.noise = try f.double("tokenizer.noise", default: 0, range: 0...1_000_000)
      v.fragmentLength = try f.int("tokenizer.fragment_length", default: 3, range: 0...64)
      v.contributors = f.value("tokenizer.contributors") == nil ? nil : try f.int("tokenizer.contributors", range: 1...100_000)
      v.phaseSeconds = try f.double("tokenizer.phase_seconds", default: 600, range: 1...86_400)
      v.maxBytesPerLanguage = try f.int("tokenizer.max_bytes_per_language", default: 4_000_000, range: 1...1 << 34)
      vocabulary = federated ? v : nil
    }
    seed = UInt64(try f.int("model.seed", default: 1, range: 0...Int(Int32.max)))
    rounds = try f.int("rounds.count", default: 5, range: 1...100_000)
    innerSteps = try f.int("rounds.inner_steps", default: 50, range: 1...1_000_000)
    innerStepsSchedule = try f.ints("rounds.inner_steps_schedule", range: 1...1_000_000)
    batch = try f.int("rounds.batch", default: 8, range: 1...4096)
    learningRate = try f.double("rounds.learning_rate", default: 1e-3, range: 1e-7...1)
    deadlineSeconds = try f.double("rounds.deadline_seconds", default: 300, range: 1...86_400)
    quorum = try f.double("rounds.quorum", default: 0.5, range: 0...1)
    outerOptimizer = try f.choice("rounds.outer_optimizer", default: OuterOptimizer.Kind.diloco)
    outerLR = try f.double("rounds.outer_lr", default: outerOptimizer == .fedavg ? 1 : 0.7, range: 1e-6...10)
    outerMomentum = try f.double("rounds.outer_momentum", default: 0.9, range: 0...0.999)
    compression = try f.choice("rounds.compression", default: CompressionSetting.int8)
    broadcast = try f.choice("rounds.broadcast", default: BroadcastSetting.int8)
    minNodes = try f.int("rounds.min_nodes", default: 1, range: 1...100_000)
    evalData = f.value("model.eval_data") == nil ? [] : try f.paths("model.eval_data")
    evalWindows = try f.int("model.eval_windows", default: 4, range: 1...100_000)
    publicData = f.value("public.data") == nil ? [] : try f.paths("public.data")
    warmStartSteps = try f.int("model.warm_start_steps", default: 0, range: 0...10_000_000)
    warmStartBatch = try f.int("model.warm_start_batch", default: batch, range: 1...4096)
    if warmStartSteps > 0 && publicData.isEmpty {
      throw f.fail("model.warm_start_steps", "a warm start trains version 0 on the public corpus, and the federation names none ([public] data)")
    }
    shardBytes = try f.int("public.shard_bytes", default: 262_144, range: 4096...(64 << 20))
    publicDeclaration = f.value("public.declaration") == nil ? nil : try f.path("public.declaration")
    if publicDeclaration != nil && publicData.isEmpty { throw f.fail("public.declaration", "declares the public corpus, and the federation names none ([public] data)") }
    func optional(_ key: String) throws -> String? { f.value(key) == nil ? nil : try f.string(key) }
    provider = Provider(name: try optional("provider.name"), contact: try optional("provider.contact"), representative: try optional("provider.representative"),
                        modelName: try optional("provider.model_name"), license: try optional("provider.license"),
                        placedOnMarket: try optional("provider.placed_on_market"), url: try optional("provider.url"))
    do { try provider.check(file: path) } catch let e as DeclarationError { throw f.fail(e.key, e.problem) }
    lateUpdates = try f.choice("rounds.late_updates", default: LateUpdates.drop)
    stalenessExponent = try f.double("rounds.staleness_exponent", default: 0.5, range: 0...10)
    innerSeconds = try f.double("rounds.inner_seconds", default: 0, range: 0...86_400)
    if innerSeconds > 0 && innerSeconds >= deadlineSeconds {
      throw f.fail("rounds.inner_seconds", "a node trains for \(innerSeconds) s of a round that closes after \(deadlineSeconds) s (rounds.deadline_seconds): leave time to send the update")
    }
    weighBy = try f.choice("rounds.weigh_by", default: innerSeconds > 0 ? WeighBy.updates : .tokens)
    normBoundFactor = try f.double("rounds.norm_bound_factor", default: 4, range: 1.5...1000)
    cosineBoundFactor = try f.double("rounds.cosine_bound_factor", default: 0, range: 0...1)
    scoreUpdates = try f.bool("rounds.score_updates", default: true)
    scoreWindows = try f.int("rounds.score_windows", default: 4, range: 1...10_000)
    scoreTolerance = try f.double("rounds.score_tolerance", default: 0.005, range: 0...1)
    scoreCollateral = try f.double("rounds.score_collateral", default: 12, range: 0...1000)
    restrictedSoftmax = try f.bool("rounds.restricted_softmax", default: false)
    innerState = try f.choice("rounds.inner_state", default: InnerState.keep)
    overlapSteps = try f.int("rounds.overlap_steps", default: 0, range: 0...1_000_000)
    concurrentUploads = try f.int("rounds.concurrent_uploads", default: 1, range: 1...64)
    if overlapSteps >= (innerStepsSchedule + [innerSteps]).min()! {
      throw f.fail("rounds.overlap_steps", "overlapped steps are the first of a round's inner steps: fewer than the fewest a round takes")
    }
    embeddingRows = try f.choice("rounds.embedding_rows", default: fineTune == nil ? EmbeddingRows.token_counts : .tokens)
    if fineTune != nil {
      // A fine-tuning federation trains on its members' chat data from a given base: no public text, no donors'
      // shards, no token counts of text, and every token of the vocabulary in the softmax (the answers use them all).
      if !publicData.isEmpty { throw f.fail("public.data", "a fine-tuning federation ([finetune]) trains on its members' chat data: leave [public] out") }
      if embeddingRows == .token_counts { throw f.fail("rounds.embedding_rows", "a fine-tuning federation ([finetune]) weighs updates by tokens: \"token_counts\" weighs the rows of the embedding of pre-training text") }
      if restrictedSoftmax { throw f.fail("rounds.restricted_softmax", "a fine-tuning federation ([finetune]) trains over the whole vocabulary") }
    }
    nodeEvalWindows = try f.int("rounds.node_eval_windows", default: 8, range: 0...100_000)
    tokenCountMinimum = try f.int("rounds.token_count_minimum", default: 10, range: 1...Int(UInt32.max))
    uploadStallSeconds = try f.double("rounds.upload_stall_seconds", default: 20, range: 1...86_400)
    secureAggregation = try f.bool("rounds.secure_aggregation", default: false)
    let fixedRing = f.value("rounds.secure_aggregation_bits") != nil
    if fixedRing, f.value("rounds.secure_aggregation_node_bits") != nil { throw f.fail("rounds.secure_aggregation_node_bits", "set the ring's bits or each node's, not both") }
    secureAggregationRing = fixedRing ? .fixed(try f.int("rounds.secure_aggregation_bits", range: 4...32))
                                      : .perNode(try f.int("rounds.secure_aggregation_node_bits", default: SecureAggregationRing.defaultNodeBits, range: 2...24))
    secureAggregationNeighbours = try f.int("rounds.secure_aggregation_neighbours", default: 0, range: 0...254)
    secureAggregationThreshold = try f.double("rounds.secure_aggregation_threshold", default: SecureAggregationParameters.defaultThresholdFraction, range: 0.5...1)
    secureAggregationSetupSeconds = try f.double("rounds.secure_aggregation_setup_seconds", default: 30, range: 1...3600)
    members = f.value("federation.members") == nil ? nil : try f.path("federation.members")
    dpClip = try f.double("rounds.dp_clip", default: 0, range: 0...1e6)
    dpNoiseMultiplier = try f.double("rounds.dp_noise_multiplier", default: 1, range: 0...1000)
    dpDelta = try f.double("rounds.dp_delta", default: 1e-6, range: 1e-30...0.1)
    if secureAggregation && weighBy != .tokens {
      throw f.fail("rounds.weigh_by", "secure aggregation weighs masked updates by their steps: only \"tokens\" is available with it")
    }
    if secureAggregation {
      guard members != nil else {
        throw f.fail("federation.members", "secure aggregation needs the directory of every member's enrolment card (nodes check key advertisements against it)")
      }
      guard lateUpdates == .drop else { throw f.fail("rounds.late_updates", "secure aggregation sums one round's updates only: late updates must be \"drop\"") }
    }
    // On by default (α = ½, the recipe in EXPERIMENTS.md) wherever the coordinator reads each node's update.
    let momentsPossible = !secureAggregation && dpClip == 0 && compression != .fp32
    momentWeighting = try f.double("rounds.moment_weighting", default: momentsPossible ? 0.5 : 0, range: 0...4)
    if momentWeighting > 0 {
      // The coordinator reads each node's moments: not under secure aggregation, and not with differential
      // privacy's equal weights (the noise is calibrated to them). fp32 updates are staged in θ's memory, which
      // has no room for the moments.
      if secureAggregation { throw f.fail("rounds.moment_weighting", "secure aggregation hides each node's update: averaging by second moments needs rounds.secure_aggregation = false") }
      if dpClip > 0 { throw f.fail("rounds.moment_weighting", "differential privacy weighs every node the same: averaging by second moments needs rounds.dp_clip = 0") }
      if compression == .fp32 { throw f.fail("rounds.moment_weighting", "averaging by second moments needs quantised updates (rounds.compression = \"int8\", \"int4\" or \"fp4\")") }
    }
    try f.rejectUnknownKeys()
  }
}

extension FederationConfig {
  /// Checks that the files the federation's settings name exist (the tokenizer, unless the vocabulary phase
  /// makes it; the evaluation and public text directories), with an error naming this file and the key. A
  /// coordinator and a node call it before they start; reading the settings does not (the demo's set-up reads
  /// them to make those files).
  /// The evaluation and public text are the coordinator's: a member's copy of the file names them as they lie on
  /// the coordinator's machine, and a node (`coordinator: false`) does not look for them.
  public func requireFiles(coordinator: Bool = true) throws {
    let fail = { (key: String) in { (problem: String) in ConfigError(file: self.path, key: key, problem: problem) } }
    if let d = modelInit { try TOMLFile.mustExist(d, directory: true, fail("model.init")) }
    if vocabulary == nil { try TOMLFile.mustExist(tokenizer, directory: false, fail(modelInit == nil ? "model.tokenizer" : "model.init")) }
    guard coordinator else { return }
    for (i, d) in evalData.enumerated() { try TOMLFile.mustExist(d, directory: true, fail("model.eval_data[\(i)]")) }
    for (i, d) in publicData.enumerated() { try TOMLFile.mustExist(d, directory: true, fail("public.data[\(i)]")) }
    if let d = publicDeclaration { try TOMLFile.mustExist(d, directory: false, fail("public.declaration")) }
  }

  /// Inner steps of round `r` (1-based): the schedule's for its first rounds, then `rounds.inner_steps`.
  public func innerSteps(round r: Int) -> Int {
    r >= 1 && r <= innerStepsSchedule.count ? innerStepsSchedule[r - 1] : innerSteps
  }

  /// Inner steps of all the federation's rounds (a node's learning-rate schedule spans them).
  public var totalInnerSteps: Int { (1...max(1, rounds)).reduce(0) { $0 + innerSteps(round: $1) } }
}
