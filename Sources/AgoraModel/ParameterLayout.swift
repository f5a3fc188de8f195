/// Where each named tensor lives inside the model's one flat parameter buffer.
///
/// Names, shapes and order are Hugging Face GPT-2's (`transformers` `GPT2Model`), and linear weights
/// are stored as HF's `Conv1D` does, (in, out), so a checkpoint is the flat buffer cut at these offsets.
/// Gradients and AdamW moments use the same layout.
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

  public let config: GPTConfig
  public let tensors: [Tensor]
  public let wte: Int, wpe: Int, lnfw: Int, lnfb: Int
  public let blocks: [Block]
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
    wte = add("wte.weight", [c.vocabSize, C])
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
