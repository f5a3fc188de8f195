import AgoraTensor

/// A causal language model with hand-written forward and backward passes (fp32, or bf16 mixed precision in its
/// linear layers: Products.swift): GPT-2, or the LLaMA-style
/// block (Llama.swift), as `config.architecture` says.
///
/// `parameters` and `gradients` are one flat `FloatBuffer` each, laid out by `layout`
/// (Hugging Face names, shapes and order). Activations are sized for a fixed (B, T)
/// given at creation; `forward` with targets computes the mean cross-entropy and, when asked,
/// leaves dlogits ready for `backward`.
public final class GPT {
  public let config: GPTConfig
  public let layout: ParameterLayout
  public let parameters: FloatBuffer
  public let gradients: FloatBuffer
  public let B: Int, T: Int
  let head: HeadActivations
  let body: Body
  /// The linear layers' arithmetic (`precision`).
  let products: Products
  /// LoRA adapters on the blocks' linear layers (`attach(lora:seed:)`); with them the parameters are frozen.
  public private(set) var adapters: LoRAAdapters?
  /// Whether backward computes gradients of the parameters (not when adapters are attached).
  public var trainsBase: Bool { adapters == nil }
  /// Where a frozen norm's weight gradient goes (C floats, never read).
  let discard: FloatBuffer
  /// Whether attention probabilities are kept for one layer only and recomputed in backward.
  let recomputesAttention: Bool
  public var precision: Precision { products.precision }

  /// The blocks' activations and their gradients' scratch, per architecture.
  enum Body {
    case gpt2(Activations, ActivationGradients)
    case llama(LlamaActivations, LlamaGradients, RotaryTable)
  }

  /// Creates a model with GPT-2's initialisation (normal 0.02, residual projections 0.02/√(2L)) whose matrix
  /// products run in `precision`.
  /// `baseGradients` false allocates no gradients for the parameters (a model that only trains LoRA adapters).
  public init(config: GPTConfig, batch B: Int, sequence T: Int, seed: UInt64 = 1337, precision: Precision = .fp32,
              baseGradients: Bool = true) throws {
    try config.validate()
    guard B >= 1, T >= 1, T <= config.contextLength else {
      throw ModelError.invalidConfig("batch \(B) × sequence \(T) must be positive with T ≤ contextLength \(config.contextLength)")
    }
    self.config = config
    self.B = B
    self.T = T
    layout = ParameterLayout(config)
    parameters = FloatBuffer(count: layout.count)
    gradients = FloatBuffer(count: baseGradients ? layout.count : 0)
    discard = FloatBuffer(count: config.channels)
    head = HeadActivations(B: B, T: T, V: config.vocabSize)
    // The largest activation operands: a forward input or a backward dout (first), a backward input (second).
    let c = config, wide = max(4 * c.channels, 2 * c.intermediate, (c.heads + 2 * c.kvHeads) * c.headSize)
    products = try Products(precision: precision, parameters: parameters, gradients: gradients,
                            scratchA: B * T * max(c.vocabSize, wide), scratchB: B * T * max(4 * c.channels, c.intermediate, c.channels))
    // A model that trains only adapters keeps one layer's attention probabilities (and, LLaMA, normalised inputs and
    // SwiGLU output) and recomputes each layer's in backward (a few percent of a step; the probabilities are the
    // largest activation at long T).
    recomputesAttention = !baseGradients
    switch config.architecture {
    case .gpt2: body = .gpt2(Activations(config, B: B, T: T, attentionLayers: baseGradients ? config.layers : 1), ActivationGradients(config, B: B, T: T))
    case .llama:
      body = .llama(LlamaActivations(config, B: B, T: T, shared: !baseGradients), LlamaGradients(config, B: B, T: T),
                    RotaryTable(T: T, headSize: config.headSize, theta: config.ropeTheta))
    }
    initialise(seed: seed)
  }

  /// Resets the parameters to GPT-2's initialisation from `seed`.
  public func initialise(seed: UInt64) { Self.initialise(parameters, layout: layout, seed: seed) }

  /// GPT-2's initialisation of a parameter buffer laid out by `layout` (normal 0.02, residual projections
  /// 0.02/√(2L), unit norms, zero biases); LLaMA's the same (its residual projections are o_proj and
  /// down_proj). Needs no model, so a coordinator can make version 0 without allocating gradients and activations.
  public static func initialise(_ parameters: FloatBuffer, layout: ParameterLayout, seed: UInt64) {
    var rng = SplitMix64(seed: seed)
    let p = parameters.pointer
    let residualStd = 0.02 / (2.0 * Double(layout.config.layers)).squareRoot()
    for t in layout.tensors {
      let base = p + t.offset
      if t.shape.count == 1 {
        let norm = ["ln_1.weight", "ln_2.weight", "ln_f.weight", "layernorm.weight", "norm.weight"].contains { t.name.hasSuffix($0) }
        base.update(repeating: norm ? 1 : 0, count: t.count)
      } else {
        let residual = ["c_proj.weight", "o_proj.weight", "down_proj.weight"].contains { t.name.hasSuffix($0) }
        let std = residual ? residualStd : 0.02
        for i in 0..<t.count { base[i] = Float(rng.nextGaussian() * std) }
      }
    }
  }

  public func zeroGradients() {
    gradients.zero()
    adapters?.gradients.zero()
  }

  /// Puts LoRA adapters (peft's initialisation from `seed`) on the modules `settings` names and freezes the
  /// parameters: from now on backward computes the adapters' gradients only.
  @discardableResult
  public func attach(lora settings: LoRASettings, seed: UInt64 = 1337) throws -> LoRAAdapters {
    let a = LoRAAdapters(layout: try LoRALayout(config, settings: settings), rows: B * T, seed: seed)
    a.takeTokenRows(from: parameters, layout)
    adapters = a
    return a
  }

  /// Removes the adapters (the parameters train again, if this model has their gradients).
  public func detachAdapters() { adapters = nil }

  /// Gradient pointer for the parameter at `offset`, or a discard buffer when the parameters are frozen.
  @inline(__always) func gradient(_ offset: Int) -> P { trainsBase ? gradients.pointer + offset : discard.pointer }

  // MARK: - Forward

  /// Runs the model on `tokens` (B·T, row-major) and returns the mean loss over `targets` (B·T; any may be
  /// `ignoredTarget`, and the mean is over the others; the caller's `backwardScale` decides the gradient's weights),
  /// or nil without targets (logits are then in `logits`). With `backwardScale`, dlogits scaled by it
  /// are left in place of the logits for `backward`.
  @discardableResult
  public func forward(tokens: [Int32], targets: [Int32]?, backwardScale: Float? = nil) throws -> Float? {
    let (C, V) = (config.channels, config.vocabSize)
    let BT = B * T
    guard tokens.count == BT, targets.map({ $0.count == BT }) ?? true else {
      throw ModelError.mismatch("expected \(BT) tokens and targets, got \(tokens.count) and \(targets?.count ?? 0)")
    }
    for tok in tokens where tok < 0 || Int(tok) >= V { throw ModelError.mismatch("token id \(tok) outside vocabulary 0..<\(V)") }
    if let targets {
      for tok in targets where (tok < 0 || Int(tok) >= V) && tok != Self.ignoredTarget {
        throw ModelError.mismatch("target id \(tok) outside vocabulary 0..<\(V) (and not \(Self.ignoredTarget), the ignored target)")
      }
    }
    let h = head
    h.tokens.update(from: tokens, count: BT)
    if let targets { h.targets.update(from: targets, count: BT) }

    if let a = adapters {
      a.installTokenRows(into: parameters, layout)
      a.beginForward()
    }
    products.refreshWeights()
    let hidden: CP
    switch body {
    case .gpt2(let a, _): hidden = try gpt2Forward(a)
    case .llama(let a, _, let rope): hidden = try llamaForward(a, rope)
    }
    // logits (BT, V) = hidden (BT, C) · headᵀ (GPT-2's head is its token embedding)
    try products.forward(h.logits, hidden, w: layout.head, layout: .outIn, N: BT, C: C, OC: V)
    guard targets != nil else { return nil }
    if let bias = trainingLogitBias {
      // A restricted softmax: the excluded tokens' logits sink far below the others (no probability, no gradient).
      let bp = UnsafePointer(bias.pointer), lp = h.logits
      Parallel.forRange(BT, minChunk: 4) { s, e in for i in s..<e { let row = lp + i * V; for j in 0..<V { row[j] += bp[j] } } }
    }
    crossEntropyForward(h.logits, h.losses, h.targets, N: BT, V: V, dlossScale: backwardScale)
    var total = 0.0
    var counted = 0
    for i in 0..<BT where h.targets[i] != Self.ignoredTarget {
      total += Double(h.losses[i])
      counted += 1
    }
    lastCountedTargets = counted
    return counted == 0 ? 0 : Float(total / Double(counted))
  }

  /// A target that takes no part in the loss (Hugging Face's −100): the prompt's tokens when only answers train.
  public static let ignoredTarget: Int32 = -100

  /// How many targets of the last forward pass were not `ignoredTarget` (its loss is their mean).
  public private(set) var lastCountedTargets = 0

  /// GPT-2's blocks and final LayerNorm on `head.tokens`; returns the normalised hidden states (BT, C).
  private func gpt2Forward(_ a: Activations) throws -> CP {
    let (B, T, C, L, NH) = (self.B, self.T, config.channels, config.layers, config.heads)
    let BT = B * T
    let p = UnsafePointer(parameters.pointer)
    encoderForward(a.encoded, head.tokens, p + layout.wte, p + layout.wpe, BT: BT, T: T, C: C)
    for l in 0..<L {
      let w = layout.blocks[l]
      let residual = l == 0 ? a.encoded : a.residual3 + (l - 1) * BT * C
      let ln1 = a.ln1 + l * BT * C, ln1m = a.ln1Mean + l * BT, ln1r = a.ln1Rstd + l * BT
      let qkv = a.qkv + l * BT * 3 * C, atty = a.atty + l * BT * C, att = a.att + (recomputesAttention ? 0 : l) * B * NH * T * T
      let res2 = a.residual2 + l * BT * C, ln2 = a.ln2 + l * BT * C
      let ln2m = a.ln2Mean + l * BT, ln2r = a.ln2Rstd + l * BT
      let fch = a.fch + l * BT * 4 * C, fchg = a.fchGelu + l * BT * 4 * C, res3 = a.residual3 + l * BT * C

      layernormForward(ln1, ln1m, ln1r, residual, p + w.ln1w, p + w.ln1b, N: BT, C: C)
      try products.forward(qkv, ln1, w: w.qkvw, bias: w.qkvb, layout: .inOut, N: BT, C: C, OC: 3 * C)
      adapters?.forward(.cAttn, layer: l, out: qkv, ldo: 3 * C, x: ln1)
      attentionForward(atty, att, qkv, B: B, T: T, C: C, NH: NH)
      try products.forward(a.proj, atty, w: w.attprojw, bias: w.attprojb, layout: .inOut, N: BT, C: C, OC: C)
      adapters?.forward(.attnCProj, layer: l, out: a.proj, ldo: C, x: atty)
      residualForward(res2, residual, a.proj, n: BT * C)
      layernormForward(ln2, ln2m, ln2r, res2, p + w.ln2w, p + w.ln2b, N: BT, C: C)
      try products.forward(fch, ln2, w: w.fcw, bias: w.fcb, layout: .inOut, N: BT, C: C, OC: 4 * C)
      adapters?.forward(.cFc, layer: l, out: fch, ldo: 4 * C, x: ln2)
      geluForward(fchg, fch, n: BT * 4 * C)
      try products.forward(a.proj, fchg, w: w.fcprojw, bias: w.fcprojb, layout: .inOut, N: BT, C: 4 * C, OC: C)
      adapters?.forward(.mlpCProj, layer: l, out: a.proj, ldo: C, x: fchg)
      residualForward(res3, res2, a.proj, n: BT * C)
    }
    let last = a.residual3 + (L - 1) * BT * C
    layernormForward(a.lnf, a.lnfMean, a.lnfRstd, last, p + layout.lnfw, p + layout.lnfb, N: BT, C: C)
    return UnsafePointer(a.lnf)
  }

  /// Added to every row of logits before the loss in a forward pass with targets (nil: none): a restricted
  /// softmax puts a large negative value on the tokens it excludes (`restrictSoftmax(to:)`). Never used for
  /// evaluation, which is always over the whole vocabulary.
  public var trainingLogitBias: FloatBuffer? = nil

  /// Restricts the training loss's softmax to the tokens `allowed` marks (length V): the others get no
  /// probability mass and hence no gradient through the output head (FedRS-style; a federated node whose text
  /// never contains a token does not push that token down for everyone). nil lifts the restriction.
  public func restrictSoftmax(to allowed: [Bool]?) {
    guard let allowed else { trainingLogitBias = nil; return }
    precondition(allowed.count == config.vocabSize, "restrictSoftmax: one flag per token")
    let b = FloatBuffer(count: config.vocabSize)
    for (j, ok) in allowed.enumerated() { b[j] = ok ? 0 : -30_000 }
    trainingLogitBias = b
  }

  /// Per-position losses (nats) of the last forward pass with targets.
  public var lastLosses: UnsafeBufferPointer<Float> { .init(start: head.losses, count: B * T) }

  /// Logits (B·T, V) of the last forward pass without targets (or dlogits after one with `backwardScale`).
  public var logits: UnsafeBufferPointer<Float> { .init(start: head.logits, count: B * T * config.vocabSize) }

  // MARK: - Backward

  /// Accumulates ∂loss/∂parameters into `gradients`. Needs a preceding `forward` with `backwardScale`.
  public func backward() throws {
    guard trainsBase ? gradients.count == layout.count : true else {
      throw ModelError.invalidConfig("this model was made without parameter gradients and has no adapters to train")
    }
    switch body {
    case .gpt2(let a, let d): try gpt2Backward(a, d)
    case .llama(let a, let d, let rope): try llamaBackward(a, d, rope)
    }
  }

  /// The output head's backward: logits = hidden · headᵀ, so dhidden = dlogits · head (overwritten) and
  /// dhead += dlogitsᵀ · hidden.
  func headBackward(hidden: CP, dhidden: P) throws {
    adapters?.headRowsBackward(dlogits: head.logits, hidden: hidden, V: config.vocabSize)
    try products.backward(dhidden, head.logits, hidden, w: layout.head, layout: .outIn, N: B * T, C: config.channels, OC: config.vocabSize,
                          weightGradients: trainsBase)
  }

  private func gpt2Backward(_ a: Activations, _ d: ActivationGradients) throws {
    let (B, T, C, L, NH) = (self.B, self.T, config.channels, config.layers, config.heads)
    let BT = B * T
    let p = UnsafePointer(parameters.pointer)
    let wg = trainsBase
    try headBackward(hidden: a.lnf, dhidden: d.dln)
    d.dresidual.update(repeating: 0, count: BT * C)
    let last = a.residual3 + (L - 1) * BT * C
    layernormBackward(d.dresidual, gradient(layout.lnfw), gradient(layout.lnfb), d.dln, last, p + layout.lnfw,
                      a.lnfMean, a.lnfRstd, N: BT, C: C, scratch: d.scratch)

    for l in stride(from: L - 1, through: 0, by: -1) {
      let w = layout.blocks[l]
      let residual = l == 0 ? a.encoded : a.residual3 + (l - 1) * BT * C
      let ln1 = a.ln1 + l * BT * C, ln1m = a.ln1Mean + l * BT, ln1r = a.ln1Rstd + l * BT
      let qkv = a.qkv + l * BT * 3 * C, atty = a.atty + l * BT * C, att = a.att + (recomputesAttention ? 0 : l) * B * NH * T * T
      let res2 = a.residual2 + l * BT * C, ln2 = a.ln2 + l * BT * C
      let ln2m = a.ln2Mean + l * BT, ln2r = a.ln2Rstd + l * BT
      let fch = a.fch + l * BT * 4 * C, fchg = a.fchGelu + l * BT * 4 * C

      // dresidual is ∂/∂residual3; the MLP branch:
      try products.backward(d.dfch, d.dresidual, fchg, w: w.fcprojw, bias: w.fcprojb, layout: .inOut, N: BT, C: 4 * C, OC: C, weightGradients: wg)
      adapters?.backward(.mlpCProj, layer: l, dout: d.dresidual, ldo: C, x: fchg, dinp: d.dfch)
      geluBackward(d.dfch, fch, d.dfch, n: BT * 4 * C)
      try products.backward(d.dln, d.dfch, ln2, w: w.fcw, bias: w.fcb, layout: .inOut, N: BT, C: C, OC: 4 * C, weightGradients: wg)
      adapters?.backward(.cFc, layer: l, dout: d.dfch, ldo: 4 * C, x: ln2, dinp: d.dln)
      layernormBackward(d.dresidual, gradient(w.ln2w), gradient(w.ln2b), d.dln, res2, p + w.ln2w, ln2m, ln2r,
                        N: BT, C: C, scratch: d.scratch)
      // dresidual is now ∂/∂residual2; the attention branch:
      try products.backward(d.datty, d.dresidual, atty, w: w.attprojw, bias: w.attprojb, layout: .inOut, N: BT, C: C, OC: C, weightGradients: wg)
      adapters?.backward(.attnCProj, layer: l, dout: d.dresidual, ldo: C, x: atty, dinp: d.datty)
      // Recomputed probabilities (and the same output, written again where it already is).
      if recomputesAttention { attentionForward(atty, att, qkv, B: B, T: T, C: C, NH: NH) }
      attentionBackward(d.dqkv, d.datty, qkv, att, B: B, T: T, C: C, NH: NH, scratch: d.attScratch)
      try products.backward(d.dln, d.dqkv, ln1, w: w.qkvw, bias: w.qkvb, layout: .inOut, N: BT, C: C, OC: 3 * C, weightGradients: wg)
      adapters?.backward(.cAttn, layer: l, dout: d.dqkv, ldo: 3 * C, x: ln1, dinp: d.dln)
      layernormBackward(d.dresidual, gradient(w.ln1w), gradient(w.ln1b), d.dln, residual, p + w.ln1w, ln1m, ln1r,
                        N: BT, C: C, scratch: d.scratch)
    }
    if wg { encoderBackward(gradients.pointer + layout.wte, gradients.pointer + layout.wpe, d.dresidual, head.tokens, BT: BT, T: T, C: C) }
    adapters?.embeddingRowsBackward(dx: d.dresidual, tokens: head.tokens)
  }

  /// Bytes held by activations and their gradients.
  public var activationBytes: Int {
    switch body {
    case .gpt2(let a, let d): return (head.floatCount + a.floatCount + d.floatCount) * 4
    case .llama(let a, let d, _): return (head.floatCount + a.floatCount + d.floatCount) * 4
    }
  }
}

/// Slices of one 64-byte-aligned allocation (each size rounded up to 16 floats).
func carve(_ sizes: [Int]) -> (FloatBuffer, [P]) {
  let rounded = sizes.map { ($0 + 15) / 16 * 16 }
  let storage = FloatBuffer(count: rounded.reduce(0, +))
  var ptrs: [P] = []
  var off = 0
  for s in rounded { ptrs.append(storage.pointer + off); off += s }
  return (storage, ptrs)
}

/// What every architecture shares: the batch's tokens and targets, logits and per-position losses.
final class HeadActivations {
  let storage: FloatBuffer
  let tokens: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>
  let logits, losses: P
  var floatCount: Int { storage.count }

  init(B: Int, T: Int, V: Int) {
    let BT = B * T
    let (s, p) = carve([BT * V, BT])
    (storage, logits, losses) = (s, p[0], p[1])
    tokens = .allocate(capacity: BT)
    targets = .allocate(capacity: BT)
    tokens.initialize(repeating: 0, count: BT)
    targets.initialize(repeating: 0, count: BT)
  }

  deinit {
    tokens.deallocate()
    targets.deallocate()
  }
}

/// GPT-2's activations kept from forward for backward, one allocation each (llm.c's ActivationTensors).
final class Activations {
  let storage: FloatBuffer
  let encoded, ln1, ln1Mean, ln1Rstd, qkv, atty, att, proj, residual2, ln2, ln2Mean, ln2Rstd: P
  let fch, fchGelu, residual3, lnf, lnfMean, lnfRstd: P
  var floatCount: Int { storage.count }

  /// `attentionLayers`: layers whose attention probabilities are kept (L, or 1 when backward recomputes them).
  init(_ c: GPTConfig, B: Int, T: Int, attentionLayers: Int) {
    let (C, L, NH) = (c.channels, c.layers, c.heads)
    let BT = B * T
    let (s, ptrs) = carve([BT * C, L * BT * C, L * BT, L * BT, L * BT * 3 * C, L * BT * C, attentionLayers * B * NH * T * T, BT * C,
                           L * BT * C, L * BT * C, L * BT, L * BT, L * BT * 4 * C, L * BT * 4 * C, L * BT * C,
                           BT * C, BT, BT])
    storage = s
    (encoded, ln1, ln1Mean, ln1Rstd, qkv, atty, att, proj) = (ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7])
    (residual2, ln2, ln2Mean, ln2Rstd, fch, fchGelu, residual3) = (ptrs[8], ptrs[9], ptrs[10], ptrs[11], ptrs[12], ptrs[13], ptrs[14])
    (lnf, lnfMean, lnfRstd) = (ptrs[15], ptrs[16], ptrs[17])
  }
}

/// Scratch for gradients of activations: only one layer's worth is live at a time.
final class ActivationGradients {
  let storage: FloatBuffer
  let dresidual, dln, datty, dqkv, dfch, scratch, attScratch: P
  var floatCount: Int { storage.count }

  init(_ c: GPTConfig, B: Int, T: Int) {
    let C = c.channels, BT = B * T
    let threads = max(Parallel.threads, 1)
    let (s, ptrs) = carve([BT * C, BT * C, BT * C, BT * 3 * C, BT * 4 * C, threads * 2 * C, threads * T * T])
    storage = s
    (dresidual, dln, datty, dqkv, dfch, scratch, attScratch) = (ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], ptrs[6])
  }
}
