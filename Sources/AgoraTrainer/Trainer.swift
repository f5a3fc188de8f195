import AgoraData
import AgoraModel
import AgoraStorage
import AgoraTensor
import Foundation

/// Everything that decides a training run; saved with every checkpoint so a resume can check it.
public struct TrainSettings: Codable, Equatable, Sendable {
  public var preset: String = "tiny"
  /// A shape that is no preset's (an imported pilot model's); overrides `preset`.
  public var model: GPTConfig? = nil
  public var batch: Int = 8
  public var sequence: Int? = nil
  public var gradAccumulation: Int = 1
  public var steps: Int = 100
  public var maxLR: Float = 1e-3
  public var minLR: Float = 1e-4
  public var warmupSteps: Int = 10
  public var weightDecay: Float = 0.1
  public var clipNorm: Float = 1.0
  public var seed: UInt64 = 1337
  public var evalEvery: Int = 50
  public var evalWindows: Int = 16
  public var checkpointEvery: Int = 0
  /// Mixture weight per language (by name); languages not named get weight 1.
  public var mixture: [String: Double] = [:]
  /// The matrix products' arithmetic (nil: fp32; optional so that states saved before it existed still load).
  public var precision: Precision? = nil
  public init() {}
}

/// One step's figures, for the progress line.
public struct StepReport: Sendable {
  public var step: Int
  public var totalSteps: Int
  public var loss: Float
  public var lr: Float
  public var gradNorm: Float
  public var tokensPerSecond: Double
  public var secondsLeft: Double
}

/// `trainer_state.json`: where a run stands.
public struct TrainerState: Codable, Sendable {
  public var settings: TrainSettings
  public var step: Int
  public var languages: [String]
  public var losses: [Float]
  public var evals: [EvalRecord]
}

public struct EvalRecord: Codable, Sendable {
  public var step: Int
  public var bitsPerByte: [String: Double]
}

public enum TrainerError: Error, CustomStringConvertible {
  case resumeMismatch(String)
  case nonFiniteLoss(step: Int)

  public var description: String {
    switch self {
    case .resumeMismatch(let s): return "cannot resume: \(s)"
    case .nonFiniteLoss(let s): return "loss became NaN or infinite at step \(s); the last checkpoint is kept"
    }
  }
}

/// Runs AdamW training of a GPT on a tokenized corpus, with evaluation and resumable checkpoints.
public final class Trainer {
  public let settings: TrainSettings
  public let model: GPT
  public let optimizer: AdamW
  public let tokenizer: Tokenizer
  public private(set) var corpus: TokenizedCorpus
  public private(set) var sampler: MixtureSampler
  public let schedule: LRSchedule
  public private(set) var evaluator: Evaluator
  public private(set) var state: TrainerState
  /// Tokens trained on per language since this trainer was made (for contribution reports).
  public private(set) var tokensByLanguage: [String: UInt64] = [:]

  public init(settings: TrainSettings, tokenizer: Tokenizer, corpus: TokenizedCorpus) throws {
    self.settings = settings
    var config = try settings.model ?? GPTConfig.preset(settings.preset)
    config.vocabSize = tokenizer.vocabSize
    let T = settings.sequence ?? config.contextLength
    model = try GPT(config: config, batch: settings.batch, sequence: T, seed: settings.seed, precision: settings.precision ?? .fp32)
    var opt = AdamW.Settings()
    opt.weightDecay = settings.weightDecay
    optimizer = AdamW(layout: model.layout, settings: opt)
    self.tokenizer = tokenizer
    self.corpus = corpus
    let weights = corpus.languages.map { settings.mixture[$0] ?? 1 }
    sampler = try MixtureSampler(corpus: corpus, weights: weights, seed: settings.seed)
    schedule = LRSchedule(maxLR: settings.maxLR, minLR: settings.minLR, warmupSteps: settings.warmupSteps, totalSteps: settings.steps)
    evaluator = Evaluator(corpus: corpus, tokenizer: tokenizer, maxWindows: settings.evalWindows)
    state = TrainerState(settings: settings, step: 0, languages: corpus.languages, losses: [], evals: [])
  }

  /// Trains from now on on another corpus (a compute donor's next public shard): the model, the optimizer
  /// state and the step count carry on; batches are drawn from the new corpus with the same seed.
  public func use(corpus: TokenizedCorpus) throws {
    let weights = corpus.languages.map { settings.mixture[$0] ?? 1 }
    sampler = try MixtureSampler(corpus: corpus, weights: weights, seed: settings.seed)
    evaluator = Evaluator(corpus: corpus, tokenizer: tokenizer, maxWindows: settings.evalWindows)
    self.corpus = corpus
    state.languages = corpus.languages
  }

  /// Continues from a checkpoint directory written by `saveCheckpoint`: same settings (but the step
  /// count may grow), same languages, same tokenizer.
  public func resume(from dir: String) throws {
    let path = (dir as NSString).appendingPathComponent("trainer_state.json")
    guard let d = FileManager.default.contents(atPath: path) else { throw ModelError.file(path: path, problem: "cannot read the file") }
    let saved: TrainerState
    do { saved = try JSONDecoder().decode(TrainerState.self, from: d) } catch { throw ModelError.file(path: path, problem: "not a trainer state: \(error)") }
    var a = saved.settings, b = settings
    a.steps = 0; b.steps = 0
    a.evalEvery = 0; b.evalEvery = 0
    a.checkpointEvery = 0; b.checkpointEvery = 0
    guard a == b else { throw TrainerError.resumeMismatch("settings differ from the checkpoint's (\(path))") }
    guard saved.languages == corpus.languages else { throw TrainerError.resumeMismatch("languages \(saved.languages) ≠ \(corpus.languages)") }
    let tokPath = (dir as NSString).appendingPathComponent(Checkpoint.tokenizerFile)
    let savedTok = try Tokenizer(contentsOf: tokPath)
    guard savedTok.merges.elementsEqual(tokenizer.merges, by: { $0 == $1 }) else { throw TrainerError.resumeMismatch("\(tokPath) differs from the tokenizer in use") }
    let cfg = try Checkpoint.readConfig((dir as NSString).appendingPathComponent(Checkpoint.configFile))
    guard cfg == model.config else { throw TrainerError.resumeMismatch("config.json describes another model shape") }
    try Checkpoint.loadWeights(into: model, from: dir)
    try Checkpoint.loadOptimizer(optimizer, layoutCount: model.layout.count, from: dir)
    guard optimizer.step == saved.step else { throw TrainerError.resumeMismatch("optimizer step \(optimizer.step) ≠ trainer step \(saved.step)") }
    state = saved
    state.settings = settings
  }

  /// Restricts the training loss's softmax to the tokens the corpus contains (`GPT.restrictSoftmax`).
  public func restrictSoftmaxToCorpus() {
    model.restrictSoftmax(to: corpus.tokensPresent(vocabSize: model.config.vocabSize))
  }

  /// Forgets the optimizer's moments (the first, or both) while the step count and the schedule go on: a
  /// federated node whose parameters were just replaced by the federation's new version.
  public func resetOptimizerMoments(secondToo: Bool) {
    optimizer.m.zero()
    if secondToo { optimizer.v.zero() }
  }

  /// One process's share of each batch when several train one model data-parallel (a node spanning an MPI
  /// cluster): rows `rank·B ..< (rank+1)·B` of a batch of `count·B` rows. (0, 1): the whole batch.
  public var part: (rank: Int, count: Int) = (0, 1)
  /// Sums the gradients (and the loss) over the processes of `part` after each step's backward passes, before
  /// clipping (every process then clips and updates the same way): a node spanning an MPI cluster sets it.
  public var reduceGradients: ((UnsafeMutableBufferPointer<Float>, inout Float) throws -> Void)?

  /// Rows of a step's batch over all processes of `part`.
  public var globalBatch: Int { model.B * part.count }

  /// One optimizer step (with gradient accumulation); returns the mean loss.
  public func step() throws -> (loss: Float, norm: Float, lr: Float) {
    let accum = settings.gradAccumulation
    let s = state.step
    model.zeroGradients()
    var loss: Float = 0
    let (B, G) = (model.B, globalBatch)
    let scale = 1 / Float(G * model.T * accum)
    for micro in 0..<accum {
      let (x, y) = try sampler.batch(s * accum + micro, B: G, T: model.T, rows: (part.rank * B)..<((part.rank + 1) * B))
      for l in sampler.languages(s * accum + micro, B: G) { tokensByLanguage[corpus.languages[l], default: 0] += UInt64(model.T) }
      loss += try model.forward(tokens: x, targets: y, backwardScale: scale)! * Float(B) / Float(G * accum)
      try model.backward()
    }
    if let reduce = reduceGradients { try reduce(model.gradients.buffer, &loss) }
    guard loss.isFinite else { throw TrainerError.nonFiniteLoss(step: s) }
    let norm = clipGradientNorm(model.gradients, maxNorm: settings.clipNorm)
    let lr = schedule.lr(at: s)
    optimizer.update(params: model.parameters, grads: model.gradients, lr: lr)
    state.step += 1
    state.losses.append(loss)
    return (loss, norm, lr)
  }

  /// Evaluates bits-per-byte per language and records it.
  @discardableResult
  public func evaluate() throws -> EvalRecord {
    let r = EvalRecord(step: state.step, bitsPerByte: Dictionary(uniqueKeysWithValues: try evaluator.bitsPerByte(model: model)))
    state.evals.append(r)
    return r
  }

  /// Writes model, tokenizer, optimizer and trainer state to `dir` (each file atomically; the state last,
  /// so a directory whose state names step N holds step N's weights).
  public func saveCheckpoint(to dir: String) throws {
    try Checkpoint.saveModel(model, tokenizer: tokenizer, to: dir, metadata: ["agora.step": String(state.step)])
    try Checkpoint.saveOptimizer(optimizer, layoutCount: model.layout.count, to: dir)
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    try AtomicFile.write(try enc.encode(state), to: (dir as NSString).appendingPathComponent("trainer_state.json"))
  }

  /// Trains until `settings.steps`, evaluating and checkpointing as configured.
  public func run(checkpointDir: String?, progress: (StepReport) -> Void, onEval: (EvalRecord) -> Void) throws {
    let tokensPerStep = Double(model.B * model.T * settings.gradAccumulation)
    var times: [Double] = []
    while state.step < settings.steps {
      let t0 = DispatchTime.now().uptimeNanoseconds
      let (loss, norm, lr) = try step()
      let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
      times.append(dt)
      let recent = times.suffix(10)
      let avg = recent.reduce(0, +) / Double(recent.count)
      progress(StepReport(step: state.step, totalSteps: settings.steps, loss: loss, lr: lr, gradNorm: norm,
                          tokensPerSecond: tokensPerStep / avg, secondsLeft: avg * Double(settings.steps - state.step)))
      let last = state.step == settings.steps
      if (settings.evalEvery > 0 && state.step % settings.evalEvery == 0) || last { onEval(try evaluate()) }  // 0: at the end only
      if let dir = checkpointDir, (settings.checkpointEvery > 0 && state.step % settings.checkpointEvery == 0) || last {
        try saveCheckpoint(to: dir)
      }
    }
  }
}
