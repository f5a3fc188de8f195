import AgoraModel
import AgoraTensor
import Foundation

/// Errors of generation: each says what was asked and what the model allows.
public enum GenerationError: Error, Equatable, CustomStringConvertible {
  case emptyPrompt(Int)
  case promptTooLong(prompt: Int, tokens: Int, context: Int)
  case badToken(Int32, vocabulary: Int)
  case badSetting(String)
  case nonFinite(String)

  public var description: String {
    switch self {
    case .emptyPrompt(let i): return "prompt \(i) encodes to no tokens"
    case .promptTooLong(let i, let n, let c): return "prompt \(i) is \(n) tokens; the model's context is \(c) (leave room for new tokens)"
    case .badToken(let t, let v): return "token id \(t) lies outside the vocabulary 0..<\(v)"
    case .badSetting(let s): return "invalid generation setting: \(s)"
    case .nonFinite(let s): return "non-finite logits: \(s)"
    }
  }
}

/// A causal language model run forward only, with a key/value cache: GPT-2 or LLaMA blocks as `GPTConfig`
/// says, reading the same flat parameter buffer (Hugging Face layout) the trainer writes.
///
/// `forward(_:)` takes any set of rows — (sequence slot, position, token) — and computes them together: a
/// prompt's prefill is all its positions at once (matrix products), a decoding step is one row per sequence
/// (matrix-vector products at batch 1). Each row's keys and values go into its slot's cache at its position,
/// and its query attends to that slot's cache up to and including its position, so a slot that already
/// holds a prefix (an earlier prompt, a chat's history) only computes what follows it.
public final class Decoder {
  public let config: GPTConfig
  public let layout: ParameterLayout
  let p: UnsafePointer<Float>
  /// Keeps the parameters alive.
  let parameters: FloatBuffer
  public let slots: Int
  public let maxRows: Int
  /// keys and values: [layer][slot] (context, NKV, HS) each.
  let kCache: FloatBuffer, vCache: FloatBuffer
  let rope: RotaryTable?
  // Scratch, maxRows rows each.
  let x, n, qkv, att, proj, hidden, mlp, logitsScratch: FloatBuffer
  let stat1, stat2: FloatBuffer
  let scores: FloatBuffer

  /// One row to compute.
  public struct Row: Sendable {
    public var slot: Int, position: Int, token: Int32
    /// Whether its next-token logits are wanted (the last row of a prefill, every row of a decoding step).
    public var wantsLogits: Bool
    public init(slot: Int, position: Int, token: Int32, wantsLogits: Bool) {
      self.slot = slot
      self.position = position
      self.token = token
      self.wantsLogits = wantsLogits
    }
  }

  /// - Parameters:
  ///   - slots: sequences held in the cache at once (the batch of a batched generation).
  ///   - maxRows: rows per `forward` call (a longer prefill is cut into pieces of this many).
  public init(config: GPTConfig, parameters: FloatBuffer, slots: Int = 1, maxRows: Int = 256) throws {
    try config.validate()
    layout = ParameterLayout(config)
    guard parameters.count == layout.count else {
      throw ModelError.mismatch("\(parameters.count) parameters for a model of \(layout.count)")
    }
    guard slots >= 1, maxRows >= 1 else { throw GenerationError.badSetting("slots and maxRows must be positive") }
    self.config = config
    self.parameters = parameters
    p = UnsafePointer(parameters.pointer)
    self.slots = slots
    self.maxRows = max(maxRows, slots)
    let c = config, R = self.maxRows, C = c.channels, HS = c.headSize
    let kv = c.layers * slots * c.contextLength * c.kvHeads * HS
    kCache = FloatBuffer(count: kv)
    vCache = FloatBuffer(count: kv)
    rope = c.architecture == .llama ? RotaryTable(T: c.contextLength, headSize: HS, theta: c.ropeTheta) : nil
    x = FloatBuffer(count: R * C)
    n = FloatBuffer(count: R * C)
    qkv = FloatBuffer(count: R * (c.heads + 2 * c.kvHeads) * HS)
    att = FloatBuffer(count: R * c.heads * HS)
    proj = FloatBuffer(count: R * C)
    hidden = FloatBuffer(count: R * max(4 * C, 2 * c.intermediate))
    mlp = FloatBuffer(count: R * max(4 * C, c.intermediate))
    logitsScratch = FloatBuffer(count: R * C)
    stat1 = FloatBuffer(count: R)
    stat2 = FloatBuffer(count: R)
    scores = FloatBuffer(count: Parallel.threads * c.contextLength)
  }

  /// Octets of weights one decoding step reads (every matrix once; the embedding's one row, except GPT-2's,
  /// whose embedding is also the output head): the numerator of decoding's share of memory bandwidth.
  public var weightBytesPerToken: Int {
    let c = config
    let skipped = c.architecture == .gpt2 ? c.contextLength * c.channels : c.vocabSize * c.channels
    return (layout.count - skipped + c.channels) * 4
  }

  @inline(__always) func cacheOffset(layer l: Int, slot s: Int, position t: Int) -> Int {
    ((l * slots + s) * config.contextLength + t) * config.kvHeads * config.headSize
  }

  /// `out (M, OC) = inp (M, C) · W` for a weight stored (in, out) (GPT-2's Conv1D) or (out, in) (LLaMA's Linear),
  /// plus a bias when given.
  func linear(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, M: Int, weight: Int, bias: Int? = nil, C: Int, OC: Int) {
    let w = p + weight, outIn = config.architecture == .llama
    if M == 1 {
      BLAS.sgemv(transA: !outIn, rows: outIn ? OC : C, cols: outIn ? C : OC, a: w, lda: outIn ? C : OC, x: inp, y: out)
    } else {
      BLAS.sgemm(transA: false, transB: outIn, m: M, n: OC, k: C, a: inp, lda: C, b: w, ldb: outIn ? C : OC, beta: 0, c: out, ldc: OC)
    }
    if let bias {
      let b = p + bias
      for r in 0..<M { let o = out + r * OC; for j in 0..<OC { o[j] += b[j] } }
    }
  }

  /// Computes `rows` (at most `maxRows`, positions below the context) and returns the logits of those that
  /// want them, in their order, `vocabSize` each.
  public func forward(_ rows: [Row]) throws -> [[Float]] {
    let c = config, M = rows.count, C = c.channels, V = c.vocabSize
    let (NH, NKV, HS, L) = (c.heads, c.kvHeads, c.headSize, c.layers)
    guard M >= 1, M <= maxRows else { throw GenerationError.badSetting("\(M) rows in one forward pass (1...\(maxRows))") }
    for r in rows {
      guard r.token >= 0, Int(r.token) < V else { throw GenerationError.badToken(r.token, vocabulary: V) }
      guard r.slot >= 0, r.slot < slots, r.position >= 0, r.position < c.contextLength else {
        throw GenerationError.badSetting("row at slot \(r.slot), position \(r.position): slots 0..<\(slots), positions 0..<\(c.contextLength)")
      }
    }
    let X = x.pointer, N = n.pointer, llama = c.architecture == .llama
    for (i, r) in rows.enumerated() {
      (X + i * C).update(from: p + layout.wte + Int(r.token) * C, count: C)
      if !llama { let pos = p + layout.wpe + r.position * C; for j in 0..<C { X[i * C + j] += pos[j] } }
    }
    let W = (NH + 2 * NKV) * HS
    for l in 0..<L {
      if llama {
        let w = layout.llamaBlocks[l]
        rmsnormForward(N, stat1.pointer, X, p + w.attnNorm, N: M, C: C, eps: c.normEps)
        linear(qkv.pointer, N, M: M, weight: w.qkv, C: C, OC: W)
        for (i, r) in rows.enumerated() { rotate(qkv.pointer + i * W, heads: NH + NKV, position: r.position) }
      } else {
        let w = layout.blocks[l]
        layernormForward(N, stat1.pointer, stat2.pointer, X, p + w.ln1w, p + w.ln1b, N: M, C: C)
        linear(qkv.pointer, N, M: M, weight: w.qkvw, bias: w.qkvb, C: C, OC: W)
      }
      attend(rows, layer: l)
      if llama {
        let w = layout.llamaBlocks[l]
        linear(proj.pointer, att.pointer, M: M, weight: w.o, C: NH * HS, OC: C)
        residualForward(X, X, proj.pointer, n: M * C)
        rmsnormForward(N, stat1.pointer, X, p + w.mlpNorm, N: M, C: C, eps: c.normEps)
        linear(hidden.pointer, N, M: M, weight: w.gateUp, C: C, OC: 2 * c.intermediate)
        swigluForward(mlp.pointer, hidden.pointer, N: M, I: c.intermediate)
        linear(proj.pointer, mlp.pointer, M: M, weight: w.down, C: c.intermediate, OC: C)
      } else {
        let w = layout.blocks[l]
        linear(proj.pointer, att.pointer, M: M, weight: w.attprojw, bias: w.attprojb, C: C, OC: C)
        residualForward(X, X, proj.pointer, n: M * C)
        layernormForward(N, stat1.pointer, stat2.pointer, X, p + w.ln2w, p + w.ln2b, N: M, C: C)
        linear(hidden.pointer, N, M: M, weight: w.fcw, bias: w.fcb, C: C, OC: 4 * C)
        geluForward(mlp.pointer, hidden.pointer, n: M * 4 * C)
        linear(proj.pointer, mlp.pointer, M: M, weight: w.fcprojw, bias: w.fcprojb, C: 4 * C, OC: C)
      }
      residualForward(X, X, proj.pointer, n: M * C)
    }
    // The final norm and the head, for the rows whose logits are wanted only.
    let wanted = rows.indices.filter { rows[$0].wantsLogits }
    guard !wanted.isEmpty else { return [] }
    let H = logitsScratch.pointer
    for (k, i) in wanted.enumerated() { (H + k * C).update(from: X + i * C, count: C) }
    if llama {
      rmsnormForward(N, stat1.pointer, H, p + layout.lnfw, N: wanted.count, C: C, eps: c.normEps)
    } else {
      layernormForward(N, stat1.pointer, stat2.pointer, H, p + layout.lnfw, p + layout.lnfb, N: wanted.count, C: C)
    }
    var out = [[Float]](repeating: [], count: wanted.count)
    for k in 0..<wanted.count {
      var logits = [Float](repeating: 0, count: V)
      logits.withUnsafeMutableBufferPointer { BLAS.sgemv(transA: false, rows: V, cols: C, a: p + layout.head, lda: C, x: N + k * C, y: $0.baseAddress!) }
      out[k] = logits
    }
    return out
  }

  /// Rotates the first `heads` heads of one row's q‖k‖v (queries, then keys) by `position` (LLaMA).
  func rotate(_ row: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
    guard let rope else { return }
    let h = rope.half, cs = rope.cos + position * h, sn = rope.sin + position * h, HS = config.headSize
    for hd in 0..<heads {
      let v = row + hd * HS
      for i in 0..<h {
        let a = v[i], b = v[i + h]
        v[i] = a * cs[i] - b * sn[i]
        v[i + h] = b * cs[i] + a * sn[i]
      }
    }
  }

  /// Stores each row's keys and values in its slot's cache, then attends each row's queries to its slot's
  /// positions 0...position (causal; grouped-query heads share their key/value head).
  func attend(_ rows: [Row], layer l: Int) {
    let c = config, (NH, NKV, HS) = (c.heads, c.kvHeads, c.headSize), W = (NH + 2 * NKV) * HS
    let Q = qkv.pointer, A = att.pointer, kv = NKV * HS
    for (i, r) in rows.enumerated() {
      let o = cacheOffset(layer: l, slot: r.slot, position: r.position)
      (kCache.pointer + o).update(from: Q + i * W + NH * HS, count: kv)
      (vCache.pointer + o).update(from: Q + i * W + (NH + NKV) * HS, count: kv)
    }
    let scale = 1 / Float(HS).squareRoot(), group = NH / NKV, T = c.contextLength
    let work = rows.reduce(0) { $0 + ($1.position + 1) } * NH * HS
    let threads = work < 200_000 ? 1 : Parallel.threads
    Parallel.forChunks(rows.count * NH, chunks: min(threads, rows.count * NH)) { chunk, s, e in
      let sc = self.scores.pointer + chunk * T
      for job in s..<e {
        let i = job / NH, h = job % NH, r = rows[i]
        let q = Q + i * W + h * HS, out = A + i * NH * HS + h * HS
        let base = self.cacheOffset(layer: l, slot: r.slot, position: 0) + (h / group) * HS
        var mx = -Float.infinity
        for t in 0...r.position {
          let k = self.kCache.pointer + base + t * kv
          var d: Float = 0
          for j in 0..<HS { d += q[j] * k[j] }
          d *= scale
          sc[t] = d
          mx = max(mx, d)
        }
        var sum: Float = 0
        for t in 0...r.position { let e = Foundation.exp(sc[t] - mx); sc[t] = e; sum += e }
        let inv = 1 / sum
        out.update(repeating: 0, count: HS)
        for t in 0...r.position {
          let v = self.vCache.pointer + base + t * kv, a = sc[t] * inv
          for j in 0..<HS { out[j] += a * v[j] }
        }
      }
    }
  }
}
