import AgoraModel
import AgoraTensor
import Foundation

/// A model's figures on held-out text, per language, in bits per byte: plain text (`Evaluator`, over windows of
/// the validation stream) or chat data (`ChatEvaluator`, over the answer tokens of the validation conversations).
/// The coordinator scores versions and updates with one, a node its own validation text.
public protocol LanguageScoring {
  /// The languages it holds (those with validation data are scored).
  var languages: [String] { get }
  /// Bits per byte of `model` per language with validation data, in `languages` order; only `only` when given,
  /// and over at most the first `windows` windows (text) or packed rows (chat) of each when given.
  func scores(model: GPT, languages only: Set<String>?, windows: Int?) throws -> [(language: String, bitsPerByte: Double, bytes: Int)]
}

extension LanguageScoring {
  public func bitsPerByte(model: GPT, languages only: Set<String>? = nil, windows: Int? = nil) throws -> [(String, Double)] {
    try scores(model: model, languages: only, windows: windows).map { ($0.language, $0.bitsPerByte) }
  }
}

extension Evaluator: LanguageScoring {
  public var languages: [String] { corpus.languages }
}

extension ChatEvaluator: LanguageScoring {
  public var languages: [String] { corpus.languages }
}

/// What a federated node trains each round: pre-training on text (`Trainer`) or fine-tuning on chat data
/// (`FineTuner`, LoRA or the whole model). A round starts from the version (copied into `trained`), takes
/// `step()`s, and sends the change of `trained`; with averaging by second moments, the optimizer's second
/// moment (`optimizer.v`, one value per trained value) follows the update.
public protocol RoundTraining: AnyObject {
  /// The model (its forward pass, for scoring).
  var model: GPT { get }
  /// The values the federation averages: the model's parameters, or the adapters'.
  var trained: FloatBuffer { get }
  /// The inner optimizer over `trained`.
  var optimizer: AdamW { get }
  /// Rows of a step's batch over all processes that train together.
  var globalBatch: Int { get }
  /// Tokens trained on per language since the trainer was made.
  var tokensByLanguage: [String: UInt64] { get }
  /// What the node's own validation data is scored with.
  var scoring: any LanguageScoring { get }
  func step() throws -> (loss: Float, norm: Float, lr: Float)
  /// Forgets the optimizer's first moment (and the second, with `secondToo`); the step count goes on.
  func resetOptimizerMoments(secondToo: Bool)
}

extension Trainer: RoundTraining {
  public var trained: FloatBuffer { model.parameters }
  public var scoring: any LanguageScoring { evaluator }
}

extension FineTuner: RoundTraining {
  public var trained: FloatBuffer { trainedBuffers.parameters }
  public var scoring: any LanguageScoring { evaluator }
  public var globalBatch: Int { model.B }
  public func resetOptimizerMoments(secondToo: Bool) {
    optimizer.m.zero()
    if secondToo { optimizer.v.zero() }
  }
}
