import AgoraTensor

/// Where each named tensor lives inside the model's one flat parameter buffer.
///
/// GPT-2: names, shapes and order are Hugging Face GPT-2's (`transformers` `GPT2Model`), and linear weights
/// are stored as HF's `Conv1D` does, (in, out). LLaMA: names and shapes are `LlamaForCausalLM`'s, linear
/// weights as `nn.Linear` stores them, (out, in); q, k and v projections lie back to back, so they act as one
/// (NH + 2·NKV)·hs × C matrix, and so do the MLP's gate and up projections (2I × C). Either way a checkpoint is
/// the flat buffer cut at these offsets. Gradients and AdamW moments use the same layout.
public struct ParameterLayout: Sendable {
  public struct Tensor: Sendable, Equatable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
    /// Weight decay applies to matrices only (never to norms and biases).
    public var decays: Bool { shape.count == 2 }
  }

  /// Offsets of one block's tensors.
  public struct Block: Sendable {
    public let ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb: Int
  }

  /// Offsets of one LLaMA block's tensors: attention norm, fused q‖k‖v, o, MLP norm, fused gate‖up, down.
  public struct LlamaBlock: Sendable {
    public let attnNorm, qkv, o, mlpNorm, gateUp, down: Int
  }

  public let config: GPTConfig
  public let tensors: [Tensor]
  /// The input embedding (V, C) (GPT-2's is also the output head).
  public let wte: Int
  /// GPT-2's positions and final LayerNorm bias; −1 for LLaMA.
  public let wpe: Int, lnfb: Int
  /// The final norm's weight.
  public let lnfw: Int
  /// The output head (V, C): `wte` for GPT-2, `lm_head.weight` for LLaMA.
  public let head: Int
  public let blocks: [Block]
  public let llamaBlocks: [LlamaBlock]
  public let count: Int

  public init(_ c: GPTConfig) {
    config = c
    let C = c.channels
    var list: [Tensor] = []
    var off = 0
    func add(_ name: String, _ shape: [Int]) -> Int {
      let t = Tensor(name: name, shape: shape, offset: off)
      list.append(t)
      off += t.count
      return t.offset
    }
    if c.architecture == .llama {
      let hs = c.headSize, I = c.intermediate
      wte = add("model.embed_tokens.weight", [c.vocabSize, C])
      var lb: [LlamaBlock] = []
      for l in 0..<c.layers {
        let p = "model.layers.\(l)."
        let attnNorm = add(p + "input_layernorm.weight", [C])
        let q = add(p + "self_attn.q_proj.weight", [c.heads * hs, C])
        _ = add(p + "self_attn.k_proj.weight", [c.kvHeads * hs, C])
        _ = add(p + "self_attn.v_proj.weight", [c.kvHeads * hs, C])
        let o = add(p + "self_attn.o_proj.weight", [C, c.heads * hs])
        let mlpNorm = add(p + "post_attention_layernorm.weight", [C])
        let gate = add(p + "mlp.gate_proj.weight", [I, C])
        _ = add(p + "mlp.up_proj.weight", [I, C])
        let down = add(p + "mlp.down_proj.weight", [C, I])
        lb.append(LlamaBlock(attnNorm: attnNorm, qkv: q, o: o, mlpNorm: mlpNorm, gateUp: gate, down: down))
      }
      lnfw = add("model.norm.weight", [C])
      head = add("lm_head.weight", [c.vocabSize, C])
      (wpe, lnfb, blocks, llamaBlocks) = (-1, -1, [], lb)
      tensors = list
      count = off
      return
    }
    llamaBlocks = []
    wte = add("wte.weight", [c.vocabSize, C])
    head = wte
    wpe = add("wpe.weight", [c.contextLength, C])
    var bl: [Block] = []
    for l in 0..<c.layers {
      let p = "h.\(l)."
      bl.append(Block(
        ln1w: add(p + "ln_1.weight", [C]), ln1b: add(p + "ln_1.bias", [C]),
        qkvw: add(p + "attn.c_attn.weight", [C, 3 * C]), qkvb: add(p + "attn.c_attn.bias", [3 * C]),
        attprojw: add(p + "attn.c_proj.weight", [C, C]), attprojb: add(p + "attn.c_proj.bias", [C]),
        ln2w: add(p + "ln_2.weight", [C]), ln2b: add(p + "ln_2.bias", [C]),
        fcw: add(p + "mlp.c_fc.weight", [C, 4 * C]), fcb: add(p + "mlp.c_fc.bias", [4 * C]),
        fcprojw: add(p + "mlp.c_proj.weight", [4 * C, C]), fcprojb: add(p + "mlp.c_proj.bias", [C])))
    }
    blocks = bl
    lnfw = add("ln_f.weight", [C])
    lnfb = add("ln_f.bias", [C])
    tensors = list
    count = off
  }

  public func tensor(named name: String) -> Tensor? { tensors.first { $0.name == name } }
}

extension ParameterLayout {
  /// A parameter buffer for `config` with the vocabulary grown to `vocabSize` tokens (a chat template's special
  /// tokens added to a model's vocabulary): every tensor copied, and each new row of the token embedding (and of
  /// LLaMA's untied output head) set to the mean of the existing rows, so new tokens start as an average token.
  public static func growVocabulary(_ parameters: FloatBuffer, config: GPTConfig, to vocabSize: Int) throws -> (GPTConfig, FloatBuffer) {
    let old = ParameterLayout(config)
    guard parameters.count == old.count else { throw ModelError.mismatch("\(parameters.count) parameters for a layout of \(old.count)") }
    guard vocabSize >= config.vocabSize else { throw ModelError.mismatch("a vocabulary cannot shrink from \(config.vocabSize) to \(vocabSize)") }
    var c = config
    c.vocabSize = vocabSize
    let new = ParameterLayout(c), out = FloatBuffer(count: new.count), C = config.channels
    for (a, b) in zip(old.tensors, new.tensors) {
      precondition(a.name == b.name, "layouts differ in more than the vocabulary")
      (out.pointer + b.offset).update(from: parameters.pointer + a.offset, count: a.count)
      guard b.count > a.count else { continue }
      var mean = [Double](repeating: 0, count: C)
      for r in 0..<config.vocabSize { for j in 0..<C { mean[j] += Double(parameters[a.offset + r * C + j]) } }
      for r in config.vocabSize..<vocabSize { for j in 0..<C { out[b.offset + r * C + j] = Float(mean[j] / Double(config.vocabSize)) } }
    }
    return (c, out)
  }
}
