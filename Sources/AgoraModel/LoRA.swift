import AgoraTensor

/// Low-rank adapters (LoRA, Hu et al. 2021) as peft computes them: a targeted linear layer y = x·W (+ b) becomes
///   y = x·W (+ b) + (α/r) · B(A(dropout(x)))
/// with A (r, in) and B (out, r) trained and W frozen. Modules are named as Hugging Face does: LLaMA's `q_proj
/// k_proj v_proj o_proj gate_proj up_proj down_proj`, GPT-2's `c_attn c_proj c_fc` (`c_proj` is both the
/// attention's and the MLP's output projection, as peft's suffix match takes it).
public struct LoRASettings: Codable, Equatable, Sendable {
  public var rank: Int
  public var alpha: Float
  public var dropout: Float
  /// Hugging Face module names (see `LoRASettings.modules(for:)`).
  public var targets: [String]
  /// Token ids whose embedding rows (and output-head rows) are trained too, as peft's `trainable_token_indices`:
  /// the chat template's special tokens added to a base's vocabulary, which would otherwise stay at their
  /// initial rows (all alike).
  public var tokens: [Int]

  public init(rank: Int = 16, alpha: Float = 32, dropout: Float = 0, targets: [String], tokens: [Int] = []) {
    self.rank = rank
    self.alpha = alpha
    self.dropout = dropout
    self.targets = targets
    self.tokens = tokens
  }

  enum CodingKeys: String, CodingKey { case rank, alpha, dropout, targets, tokens }

  public init(from decoder: Decoder) throws {
    let k = try decoder.container(keyedBy: CodingKeys.self)
    rank = try k.decode(Int.self, forKey: .rank)
    alpha = try k.decode(Float.self, forKey: .alpha)
    dropout = try k.decodeIfPresent(Float.self, forKey: .dropout) ?? 0
    targets = try k.decode([String].self, forKey: .targets)
    tokens = try k.decodeIfPresent([Int].self, forKey: .tokens) ?? []
  }

  /// peft's scaling, α / r.
  public var scaling: Float { alpha / Float(rank) }

  /// The module names an architecture has.
  public static func modules(for architecture: GPTConfig.Architecture) -> [String] {
    architecture == .llama ? ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] : ["c_attn", "c_proj", "c_fc"]
  }

  /// The recommended targets: every linear layer of the blocks.
  public static func defaultTargets(for architecture: GPTConfig.Architecture) -> [String] { modules(for: architecture) }

  public func validate(for architecture: GPTConfig.Architecture) throws {
    let known = Self.modules(for: architecture)
    guard rank >= 1, rank <= 4096 else { throw ModelError.invalidConfig("LoRA rank \(rank) must be in 1…4096") }
    guard alpha.isFinite, alpha > 0 else { throw ModelError.invalidConfig("LoRA alpha \(alpha) must be a positive number") }
    guard dropout.isFinite, dropout >= 0, dropout < 1 else { throw ModelError.invalidConfig("LoRA dropout \(dropout) must be in [0, 1)") }
    guard !targets.isEmpty else { throw ModelError.invalidConfig("LoRA needs at least one target module (\(known.joined(separator: ", ")))") }
    for t in targets where !known.contains(t) {
      throw ModelError.invalidConfig("LoRA target \"\(t)\" is not a module of a \(architecture.rawValue) block (it has \(known.joined(separator: ", ")))")
    }
    guard Set(targets).count == targets.count else { throw ModelError.invalidConfig("LoRA targets \(targets) name a module twice") }
    guard Set(tokens).count == tokens.count, tokens.count <= 4096 else { throw ModelError.invalidConfig("LoRA's trained tokens \(tokens.prefix(8)) repeat or are too many") }
  }
}

/// Where each adapter matrix lives in the adapters' one flat buffer, with peft's names
/// (`base_model.model.<module>.lora_A.weight` (r, in), `….lora_B.weight` (out, r)), in the model's module order.
public struct LoRALayout: Sendable {
  /// The linear layers an adapter can sit on, by where its product is in a block.
  public enum Site: Sendable, Equatable {
    // GPT-2
    case cAttn, attnCProj, cFc, mlpCProj
    // LLaMA: slices of the fused q‖k‖v and gate‖up products, and the two output projections.
    case q, k, v, o, gate, up, down
  }

  public struct Module: Sendable {
    public let site: Site
    public let layer: Int
    /// The Hugging Face module path, e.g. `model.layers.0.self_attn.q_proj`.
    public let path: String
    public let inFeatures: Int, outFeatures: Int
    /// Offsets of A (r, in) and B (out, r) in the adapters' buffer.
    public let a: Int, b: Int
    /// Where the module's outputs start inside the row of the (possibly fused) product it adds to.
    public let column: Int
    /// Its place in `modules`.
    public let ordinal: Int
  }

  public let settings: LoRASettings
  public let config: GPTConfig
  public let modules: [Module]
  /// The trained token rows (n, C): of the embedding, and of the output head when it is its own matrix (LLaMA's
  /// untied head; GPT-2's head is its embedding, so its one set of rows serves both); −1 when there are none.
  public let embeddingRows: Int, headRows: Int
  /// Every matrix, A then B per module, as `ParameterLayout.Tensor`s (peft names).
  public let tensors: [ParameterLayout.Tensor]
  public let count: Int
  /// modules[index[layer][site]]
  private let index: [[Site: Int]]

  public init(_ c: GPTConfig, settings: LoRASettings) throws {
    try settings.validate(for: c.architecture)
    for t in settings.tokens where t < 0 || t >= c.vocabSize {
      throw ModelError.invalidConfig("LoRA's trained token \(t) lies outside the vocabulary of \(c.vocabSize)")
    }
    self.settings = settings
    config = c
    let r = settings.rank, C = c.channels
    var mods: [Module] = [], list: [ParameterLayout.Tensor] = [], idx: [[Site: Int]] = []
    var off = 0
    for l in 0..<c.layers {
      var sites: [(Site, String, String, Int, Int, Int)] = []  // site, target name, path, in, out, column
      if c.architecture == .llama {
        let hs = c.headSize, I = c.intermediate, q = c.heads * hs, kv = c.kvHeads * hs
        let p = "model.layers.\(l)."
        sites = [(.q, "q_proj", p + "self_attn.q_proj", C, q, 0), (.k, "k_proj", p + "self_attn.k_proj", C, kv, q),
                 (.v, "v_proj", p + "self_attn.v_proj", C, kv, q + kv), (.o, "o_proj", p + "self_attn.o_proj", q, C, 0),
                 (.gate, "gate_proj", p + "mlp.gate_proj", C, I, 0), (.up, "up_proj", p + "mlp.up_proj", C, I, I),
                 (.down, "down_proj", p + "mlp.down_proj", I, C, 0)]
      } else {
        let p = "transformer.h.\(l)."
        sites = [(.cAttn, "c_attn", p + "attn.c_attn", C, 3 * C, 0), (.attnCProj, "c_proj", p + "attn.c_proj", C, C, 0),
                 (.cFc, "c_fc", p + "mlp.c_fc", C, 4 * C, 0), (.mlpCProj, "c_proj", p + "mlp.c_proj", 4 * C, C, 0)]
      }
      var here: [Site: Int] = [:]
      for (site, target, path, inF, outF, column) in sites where settings.targets.contains(target) {
        let a = ParameterLayout.Tensor(name: "base_model.model.\(path).lora_A.weight", shape: [r, inF], offset: off)
        off += a.count
        let b = ParameterLayout.Tensor(name: "base_model.model.\(path).lora_B.weight", shape: [outF, r], offset: off)
        off += b.count
        list += [a, b]
        here[site] = mods.count
        mods.append(Module(site: site, layer: l, path: path, inFeatures: inF, outFeatures: outF, a: a.offset, b: b.offset, column: column,
                           ordinal: mods.count))
      }
      idx.append(here)
    }
    var (embeddingRows, headRows) = (-1, -1)
    if !settings.tokens.isEmpty {
      let n = settings.tokens.count
      let embedding = c.architecture == .llama ? "model.embed_tokens" : "transformer.wte"
      let e = ParameterLayout.Tensor(name: "base_model.model.\(embedding).token_adapter.trainable_tokens_delta", shape: [n, C], offset: off)
      list.append(e)
      off += e.count
      embeddingRows = e.offset
      if c.architecture == .llama {
        let h = ParameterLayout.Tensor(name: "base_model.model.lm_head.token_adapter.trainable_tokens_delta", shape: [n, C], offset: off)
        list.append(h)
        off += h.count
        headRows = h.offset
      }
    }
    (self.embeddingRows, self.headRows) = (embeddingRows, headRows)
    (modules, tensors, count, index) = (mods, list, off, idx)
  }

  public func module(_ site: Site, layer: Int) -> Module? { index[layer][site].map { modules[$0] } }
}

/// The trained side of a LoRA model: the adapters' parameters and gradients (flat, laid out by `layout`) and what
/// their backward pass needs from the forward one (each module's x·Aᵀ, and the dropout draw).
public final class LoRAAdapters {
  public let layout: LoRALayout
  public let parameters: FloatBuffer
  public let gradients: FloatBuffer
  let N: Int
  /// Per module (N, r): dropout(x) · Aᵀ kept from forward.
  private let projected: FloatBuffer
  /// (N, r) and (N, max in) scratch for the backward pass and dropout.
  private let g: FloatBuffer, wide: FloatBuffer
  /// Seed of the dropout masks; `pass` counts forward passes, so each has its own masks and its backward the same.
  public var dropoutSeed: UInt64 = 0x10_7A
  var pass: UInt64 = 0

  /// Adapters for `layout` on a model run with B·T = `rows` positions, initialised as peft does
  /// (A Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in); B zero), from `seed`.
  public init(layout: LoRALayout, rows: Int, seed: UInt64 = 1337) {
    self.layout = layout
    N = rows
    parameters = FloatBuffer(count: layout.count)
    gradients = FloatBuffer(count: layout.count)
    let r = layout.settings.rank
    projected = FloatBuffer(count: max(1, layout.modules.count * rows * r))
    g = FloatBuffer(count: rows * r)
    wide = FloatBuffer(count: rows * (layout.modules.map(\.inFeatures).max() ?? 1))
    initialise(seed: seed)
  }

  /// peft's initialisation: A ~ U(−1/√in, 1/√in), B = 0 (so the adapted model starts as the base).
  public func initialise(seed: UInt64) {
    var rng = SplitMix64(seed: seed)
    let p = parameters.pointer
    for m in layout.modules {
      let bound = 1 / Double(m.inFeatures).squareRoot(), r = layout.settings.rank
      for i in 0..<(r * m.inFeatures) { p[m.a + i] = Float((2 * rng.nextUnit() - 1) * bound) }
      (p + m.b).update(repeating: 0, count: m.outFeatures * r)
    }
  }

  func beginForward() { pass &+= 1 }

  /// Copies the base's current rows of the trained tokens into the adapters (peft's initialisation of trainable
  /// tokens: they start as they are).
  func takeTokenRows(from parameters: FloatBuffer, _ pl: ParameterLayout) {
    let C = layout.config.channels
    for (i, t) in layout.settings.tokens.enumerated() {
      if layout.embeddingRows >= 0 { (self.parameters.pointer + layout.embeddingRows + i * C).update(from: parameters.pointer + pl.wte + t * C, count: C) }
      if layout.headRows >= 0 { (self.parameters.pointer + layout.headRows + i * C).update(from: parameters.pointer + pl.head + t * C, count: C) }
    }
  }

  /// Writes the trained token rows into the base's embedding (and head): they replace those rows, as peft's
  /// `index_copy` does, so a forward pass on the base then computes what the adapted model does.
  public func installTokenRows(into parameters: FloatBuffer, _ pl: ParameterLayout) {
    let C = layout.config.channels
    for (i, t) in layout.settings.tokens.enumerated() {
      if layout.embeddingRows >= 0 { (parameters.pointer + pl.wte + t * C).update(from: self.parameters.pointer + layout.embeddingRows + i * C, count: C) }
      if layout.headRows >= 0 { (parameters.pointer + pl.head + t * C).update(from: self.parameters.pointer + layout.headRows + i * C, count: C) }
    }
  }

  /// The output head's gradient for the trained tokens' rows: row i += Σ_t dlogits[t, token_i] · hidden[t]
  /// (into the head rows, or GPT-2's shared embedding rows).
  func headRowsBackward(dlogits: CP, hidden: CP, V: Int) {
    guard !layout.settings.tokens.isEmpty else { return }
    let C = layout.config.channels, rows = layout.headRows >= 0 ? layout.headRows : layout.embeddingRows
    let column = FloatBuffer(count: N), y = FloatBuffer(count: C)
    for (i, t) in layout.settings.tokens.enumerated() {
      for r in 0..<N { column[r] = dlogits[r * V + t] }
      BLAS.sgemv(transA: true, rows: N, cols: C, a: hidden, lda: C, x: column.pointer, y: y.pointer)
      let g = gradients.pointer + rows + i * C
      for j in 0..<C { g[j] += y[j] }
    }
  }

  /// The embedding's gradient for the trained tokens' rows: row i += dx at every position holding token_i.
  func embeddingRowsBackward(dx: CP, tokens: UnsafePointer<Int32>) {
    guard layout.embeddingRows >= 0 else { return }
    let C = layout.config.channels
    var slot: [Int32: Int] = [:]
    for (i, t) in layout.settings.tokens.enumerated() { slot[Int32(t)] = i }
    for r in 0..<N {
      guard let i = slot[tokens[r]] else { continue }
      let g = gradients.pointer + layout.embeddingRows + i * C, d = dx + r * C
      for j in 0..<C { g[j] += d[j] }
    }
  }

  /// The dropout draw of `m` in this pass: position k (of rows × in) is dropped when this is true.
  private func dropMask(_ m: LoRALayout.Module) -> (seed: UInt64, threshold: UInt64) {
    (dropoutSeed ^ (pass &* 0x9E37_79B9) ^ (UInt64(m.a) << 20), UInt64(Double(layout.settings.dropout) * 0x1p53))
  }

  /// dropout(x) into `wide` (inverted dropout: kept values scaled by 1/(1−p)), or x itself without dropout.
  private func dropped(_ x: CP, _ m: LoRALayout.Module, rows: Int) -> CP {
    let p = layout.settings.dropout
    guard p > 0 else { return x }
    let n = rows * m.inFeatures, out = wide.pointer, keep = 1 / (1 - p), (seed, threshold) = dropMask(m)
    Parallel.forRange(n, minChunk: 4096) { s, e in
      for k in s..<e { out[k] = (DeltaKernels.bits(seed, UInt64(k)) >> 11) < threshold ? 0 : x[k] * keep }
    }
    return UnsafePointer(out)
  }

  /// out[:, column ..< column + outF] (row stride `ldo`) += (α/r) · (dropout(x) · Aᵀ) · Bᵀ for the adapter at
  /// `site` of `layer`, if there is one; x is (rows, in).
  func forward(_ site: LoRALayout.Site, layer: Int, out: P, ldo: Int, x: CP) {
    guard let m = layout.module(site, layer: layer) else { return }
    let r = layout.settings.rank, p = UnsafePointer(parameters.pointer)
    let u = projected.pointer + m.ordinal * N * r
    let xd = dropped(x, m, rows: N)
    BLAS.sgemm(transA: false, transB: true, m: N, n: r, k: m.inFeatures, a: xd, lda: m.inFeatures, b: p + m.a, ldb: m.inFeatures,
               beta: 0, c: u, ldc: r)
    BLAS.sgemm(transA: false, transB: true, m: N, n: m.outFeatures, k: r, alpha: layout.settings.scaling, a: u, lda: r,
               b: p + m.b, ldb: r, beta: 1, c: out + m.column, ldc: ldo)
  }

  /// The backward of `forward`: from dout (rows, ldo) at the module's columns and its input x, accumulates
  /// ∂/∂A and ∂/∂B into `gradients` and ∂/∂x into dinp (rows, in).
  func backward(_ site: LoRALayout.Site, layer: Int, dout: CP, ldo: Int, x: CP, dinp: P) {
    guard let m = layout.module(site, layer: layer) else { return }
    let r = layout.settings.rank, s = layout.settings.scaling, inF = m.inFeatures
    let p = UnsafePointer(parameters.pointer), grad = gradients.pointer
    let u = UnsafePointer(projected.pointer + m.ordinal * N * r), d = dout + m.column, gp = g.pointer
    // g = s · dout · B (N, r);  dB += s · doutᵀ · u;  dA += gᵀ · dropout(x);  dx += dropout'(g · A)
    BLAS.sgemm(transA: false, transB: false, m: N, n: r, k: m.outFeatures, alpha: s, a: d, lda: ldo, b: p + m.b, ldb: r,
               beta: 0, c: gp, ldc: r)
    BLAS.sgemm(transA: true, transB: false, m: m.outFeatures, n: r, k: N, alpha: s, a: d, lda: ldo, b: u, ldb: r,
               beta: 1, c: grad + m.b, ldc: r)
    let xd = dropped(x, m, rows: N)
    BLAS.sgemm(transA: true, transB: false, m: r, n: inF, k: N, a: gp, lda: r, b: xd, ldb: inF, beta: 1, c: grad + m.a, ldc: inF)
    let dropout = layout.settings.dropout
    if dropout == 0 {
      BLAS.sgemm(transA: false, transB: false, m: N, n: inF, k: r, a: gp, lda: r, b: p + m.a, ldb: inF, beta: 1, c: dinp, ldc: inF)
      return
    }
    // dropout's backward: g · A where the draw kept x, scaled by 1/(1−p) (`wide` is free again).
    let ga = wide.pointer, keep = 1 / (1 - dropout), (seed, threshold) = dropMask(m)
    BLAS.sgemm(transA: false, transB: false, m: N, n: inF, k: r, a: gp, lda: r, b: p + m.a, ldb: inF, beta: 0, c: ga, ldc: inF)
    Parallel.forRange(N * inF, minChunk: 4096) { s0, e0 in
      for k in s0..<e0 where (DeltaKernels.bits(seed, UInt64(k)) >> 11) >= threshold { dinp[k] += ga[k] * keep }
    }
  }

  /// Bytes held by the adapters, their gradients and their activations.
  public var bytes: Int { (parameters.count + gradients.count + projected.count + g.count + wide.count) * 4 }
}

extension LoRAAdapters {
  /// Adds (α/r)·B·A to each adapted weight of `parameters` (a buffer in `ParameterLayout(config)`): the merged
  /// model, which computes what base + adapters compute (without dropout).
  public func merge(into parameters: FloatBuffer) {
    let c = layout.config, pl = ParameterLayout(c), r = layout.settings.rank, s = layout.settings.scaling
    let a = UnsafePointer(self.parameters.pointer), w = parameters.pointer
    for m in layout.modules {
      let (offset, outIn) = Self.baseWeight(m, pl)
      if outIn {
        // W (out, in) rows column ..< column + out: += s · B (out, r) · A (r, in)
        BLAS.sgemm(transA: false, transB: false, m: m.outFeatures, n: m.inFeatures, k: r, alpha: s, a: a + m.b, lda: r,
                   b: a + m.a, ldb: m.inFeatures, beta: 1, c: w + offset + m.column * m.inFeatures, ldc: m.inFeatures)
      } else {
        // Conv1D W (in, out): += s · Aᵀ (in, r) · Bᵀ (r, out)
        BLAS.sgemm(transA: true, transB: true, m: m.inFeatures, n: m.outFeatures, k: r, alpha: s, a: a + m.a, lda: m.inFeatures,
                   b: a + m.b, ldb: r, beta: 1, c: w + offset, ldc: m.outFeatures)
      }
    }
    installTokenRows(into: parameters, pl)
  }

  /// The parameter offset of the weight a module adapts, and whether it is stored (out, in).
  static func baseWeight(_ m: LoRALayout.Module, _ pl: ParameterLayout) -> (Int, Bool) {
    switch m.site {
    case .q, .k, .v: return (pl.llamaBlocks[m.layer].qkv, true)
    case .o: return (pl.llamaBlocks[m.layer].o, true)
    case .gate, .up: return (pl.llamaBlocks[m.layer].gateUp, true)
    case .down: return (pl.llamaBlocks[m.layer].down, true)
    case .cAttn: return (pl.blocks[m.layer].qkvw, false)
    case .attnCProj: return (pl.blocks[m.layer].attprojw, false)
    case .cFc: return (pl.blocks[m.layer].fcw, false)
    case .mlpCProj: return (pl.blocks[m.layer].fcprojw, false)
    }
  }
}
