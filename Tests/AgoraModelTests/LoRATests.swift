import AgoraTensor
import AgoraTestSupport
import AgoraFineTune
import Foundation
import Testing
@testable import AgoraModel

/// LoRA adapters in the trainer's forward and backward passes (issue #34): finite differences of every
/// adapter matrix on GPT-2 and LLaMA blocks (with and without dropout), a frozen base, the merge, the
/// ignored targets of answer-only training, and peft's adapter directory written, read and refused.
@Suite struct LoRATests {
  /// A small model away from its initialisation, so every parameter matters.
  static func model(_ preset: String, B: Int = 2, T: Int = 8, baseGradients: Bool = false) throws -> GPT {
    var c = try GPTConfig.preset(preset)
    c.vocabSize = 61
    c.contextLength = 16
    let m = try GPT(config: c, batch: B, sequence: T, seed: 3, baseGradients: baseGradients)
    var r = SplitMix64(seed: 11)
    for i in 0..<m.parameters.count { m.parameters[i] += Float(r.nextGaussian() * 0.05) }
    return m
  }

  /// Random adapters (B not zero, so that every matrix has a gradient).
  static func randomise(_ a: LoRAAdapters, seed: UInt64 = 21, scale: Double = 0.2) {
    var r = SplitMix64(seed: seed)
    for i in 0..<a.parameters.count { a.parameters[i] = Float(r.nextGaussian() * scale) }
  }

  static func batch(_ n: Int, seed: UInt64 = 5, ignoreEvery: Int? = nil) -> ([Int32], [Int32]) {
    var r = SplitMix64(seed: seed)
    let x = (0..<n).map { _ in Int32(r.next() % 61) }
    let y = (0..<n).map { i in ignoreEvery.map { i % $0 == 0 } == true ? GPT.ignoredTarget : Int32(r.next() % 61) }
    return (x, y)
  }

  /// Central differences of the loss against the analytic adapter gradient at the largest coordinates of every
  /// adapter matrix; returns the worst relative error and how many coordinates were checked.
  static func finiteDifferences(_ m: GPT, _ x: [Int32], _ y: [Int32], pinDropout: Bool) throws -> (Double, Int) {
    let a = m.adapters!
    func loss(backward: Bool) throws -> Double {
      if pinDropout { a.pass = 0 }  // the same dropout draw in every pass
      let counted = y.filter { $0 != GPT.ignoredTarget }.count
      let l = try m.forward(tokens: x, targets: y, backwardScale: backward ? 1 / Float(counted) : nil)!
      return Double(l)
    }
    m.zeroGradients()
    _ = try loss(backward: true)
    try m.backward()
    let grads = FloatBuffer(count: a.gradients.count)
    grads.copy(from: a.gradients)
    var worst = 0.0, checked = 0
    for t in a.layout.tensors {
      let idx = (t.offset..<(t.offset + t.count)).sorted { abs(grads[$0]) > abs(grads[$1]) }.prefix(3)
      for i in idx where abs(grads[i]) > 1e-4 {
        let old = a.parameters[i], eps: Float = 1e-2
        a.parameters[i] = old + eps
        let lp = try loss(backward: false)
        a.parameters[i] = old - eps
        let lm = try loss(backward: false)
        a.parameters[i] = old
        let num = (lp - lm) / Double(2 * eps)
        worst = max(worst, abs(num - Double(grads[i])) / max(abs(num) + abs(Double(grads[i])), 1e-3))
        checked += 1
      }
    }
    return (worst, checked)
  }

  /// (preset, targets, dropout, trains token rows)
  static let cases: [(String, [String], Float, Bool)] = [
    ("tiny", ["c_attn", "c_proj", "c_fc"], 0, false),
    ("llama-tiny", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 0, false),
    ("tiny", ["c_attn", "c_fc"], 0.25, true),
    ("llama-tiny", ["k_proj", "up_proj", "down_proj"], 0.25, true),
  ]

  @Test(arguments: cases.indices)
  func adapterGradientsMatchFiniteDifferences(_ which: Int) throws {
    let (preset, targets, dropout, rows) = Self.cases[which]
    let m = try Self.model(preset)
    let (x, y) = Self.batch(m.B * m.T, ignoreEvery: 3)
    // Token rows: two tokens of the batch (input and target) and one that is in neither (its rows get no gradient).
    let unused = (0..<61).first { t in !x.contains(Int32(t)) && !y.contains(Int32(t)) }!
    let tokens = rows ? [Int(x[0]), Int(y[4]), unused] : []
    let a = try m.attach(lora: LoRASettings(rank: 4, alpha: 8, dropout: dropout, targets: targets, tokens: tokens), seed: 7)
    #expect(a.layout.modules.count == targets.count * m.config.layers + (targets.contains("c_proj") ? m.config.layers : 0))
    #expect(a.layout.tensors.count == 2 * a.layout.modules.count + (rows ? (preset == "tiny" ? 1 : 2) : 0))
    Self.randomise(a)
    let (worst, checked) = try Self.finiteDifferences(m, x, y, pinDropout: dropout > 0)
    #expect(checked >= a.layout.tensors.count * 2, "\(checked) coordinates checked")
    #expect(worst < 3e-2, "\(preset) \(targets) dropout \(dropout): worst relative error \(worst) over \(checked) coordinates")
    #expect(m.gradients.count == 0, "a LoRA model made without base gradients holds none")
  }

  /// The base stays frozen: with a full gradient buffer present, backward with adapters leaves it at zero.
  @Test(arguments: ["tiny", "llama-tiny"])
  func baseIsFrozen(_ preset: String) throws {
    let m = try Self.model(preset, baseGradients: true)
    let a = try m.attach(lora: LoRASettings(rank: 2, alpha: 4, targets: LoRASettings.defaultTargets(for: m.config.architecture)))
    Self.randomise(a)
    let (x, y) = Self.batch(m.B * m.T)
    m.zeroGradients()
    _ = try m.forward(tokens: x, targets: y, backwardScale: 1 / Float(x.count))
    try m.backward()
    #expect(m.gradients.array.allSatisfy { $0 == 0 })
    #expect(a.gradients.array.contains { $0 != 0 })
    // Without adapters and without base gradients, backward is a typed error, not a crash.
    let frozen = try Self.model(preset)
    _ = try frozen.forward(tokens: x, targets: y, backwardScale: 1)
    #expect(throws: ModelError.self) { try frozen.backward() }
  }

  /// peft's initialisation (B = 0) leaves the model as it was; the merged weights compute what base + adapters do.
  @Test(arguments: ["tiny", "llama-tiny"])
  func initialisationAndMerge(_ preset: String) throws {
    let m = try Self.model(preset)
    let (x, _) = Self.batch(m.B * m.T)
    _ = try m.forward(tokens: x, targets: nil)
    let before = Array(m.logits)
    let a = try m.attach(lora: LoRASettings(rank: 4, alpha: 16, targets: LoRASettings.defaultTargets(for: m.config.architecture)), seed: 9)
    _ = try m.forward(tokens: x, targets: nil)
    #expect(Array(m.logits) == before, "B = 0: the adapted model starts as the base")
    Self.randomise(a, scale: 0.1)
    _ = try m.forward(tokens: x, targets: nil)
    let adapted = Array(m.logits)
    let effect = zip(adapted, before).map { abs($0 - $1) }.max()!
    #expect(effect > 1e-2, "random adapters change the logits (\(effect))")
    let merged = try GPT(config: m.config, batch: m.B, sequence: m.T)
    merged.parameters.copy(from: m.parameters)
    a.merge(into: merged.parameters)
    _ = try merged.forward(tokens: x, targets: nil)
    let diff = zip(Array(merged.logits), adapted).map { abs($0 - $1) }.max()!
    #expect(diff < 1e-4, "merged vs adapted logits differ by \(diff)")
  }

  /// Answer-only training: ignored targets take no part in the loss and give no gradient.
  @Test func ignoredTargets() throws {
    let m = try Self.model("llama-tiny", baseGradients: true)
    var (x, y) = Self.batch(m.B * m.T, ignoreEvery: 2)
    let counted = y.filter { $0 != GPT.ignoredTarget }.count
    let loss = try m.forward(tokens: x, targets: y, backwardScale: 1 / Float(counted))!
    #expect(m.lastCountedTargets == counted)
    let losses = Array(m.lastLosses)
    let mean = zip(losses, y).filter { $0.1 != GPT.ignoredTarget }.map { Double($0.0) }.reduce(0, +) / Double(counted)
    #expect(abs(Double(loss) - mean) < 1e-5)
    for (i, t) in y.enumerated() where t == GPT.ignoredTarget {
      #expect(losses[i] == 0)
      #expect(m.logits[(i * m.config.vocabSize)..<((i + 1) * m.config.vocabSize)].allSatisfy { $0 == 0 }, "no gradient from position \(i)")
    }
    // Any other negative target, or one past the vocabulary, is refused.
    y[1] = -1
    #expect(throws: ModelError.self) { try m.forward(tokens: x, targets: y) }
    y[1] = 61
    #expect(throws: ModelError.self) { try m.forward(tokens: x, targets: y) }
    // All ignored: loss 0, not NaN.
    x = Array(x)
    let none = [Int32](repeating: GPT.ignoredTarget, count: x.count)
    #expect(try m.forward(tokens: x, targets: none, backwardScale: 1) == 0)
  }

  @Test func settingsAreChecked() throws {
    let c = try GPTConfig.preset("llama-tiny")
    let bad: [LoRASettings] = [
      LoRASettings(rank: 0, targets: ["q_proj"]), LoRASettings(rank: 4, alpha: 0, targets: ["q_proj"]),
      LoRASettings(rank: 4, dropout: 1, targets: ["q_proj"]), LoRASettings(rank: 4, targets: []),
      LoRASettings(rank: 4, targets: ["c_attn"]), LoRASettings(rank: 4, targets: ["q_proj", "q_proj"]),
      LoRASettings(rank: 4, dropout: .nan, targets: ["q_proj"]),
    ]
    for s in bad {
      #expect(throws: ModelError.self, "\(s)") { try LoRALayout(c, settings: s) }
    }
    do {
      _ = try LoRALayout(c, settings: LoRASettings(rank: 4, targets: ["qproj"]))
    } catch let e as ModelError {
      #expect(e.description.contains("\"qproj\"") && e.description.contains("q_proj"), "\(e)")
    }
  }

  /// The adapter directory round-trips; a broken one is a typed error that names the problem.
  @Test func adapterDirectory() throws {
    let m = try Self.model("llama-tiny")
    let s = LoRASettings(rank: 4, alpha: 8, dropout: 0.05, targets: ["q_proj", "v_proj", "down_proj"])
    let a = try m.attach(lora: s)
    Self.randomise(a)
    let dir = NSTemporaryDirectory() + "agora-lora-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try LoRACheckpoint.save(a, to: dir, baseModel: "blake3:00ff")
    #expect(try LoRACheckpoint.readSettings(dir, architecture: .llama) == s)
    let b = LoRAAdapters(layout: a.layout, rows: 4)
    try LoRACheckpoint.loadWeights(into: b, from: dir)
    #expect(b.parameters.array == a.parameters.array)
    #expect(throws: ModelError.self) { try LoRACheckpoint.readSettings(dir, architecture: .gpt2) }

    let cfgPath = dir + "/" + LoRACheckpoint.configFile
    let original = try String(contentsOfFile: cfgPath, encoding: .utf8)
    for (from, to, says) in [("\"use_rslora\": false", "\"use_rslora\": true", "use_rslora"), ("\"bias\": \"none\"", "\"bias\": \"all\"", "bias"),
                             ("\"modules_to_save\": null", "\"modules_to_save\": [\"lm_head\"]", "modules_to_save"),
                             ("\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\"", "peft_type")] {
      try original.replacingOccurrences(of: from, with: to).write(toFile: cfgPath, atomically: true, encoding: .utf8)
      do {
        _ = try LoRACheckpoint.readSettings(dir, architecture: .llama)
        Issue.record("\(to) was accepted")
      } catch let e as ModelError {
        #expect(e.description.contains(says), "\(e)")
      }
    }
    // Weights: another rank's shapes, a NaN, a missing tensor.
    let other = LoRAAdapters(layout: try LoRALayout(m.config, settings: LoRASettings(rank: 2, targets: s.targets)), rows: 4)
    #expect(throws: ModelError.self) { try LoRACheckpoint.loadWeights(into: other, from: dir) }
    a.parameters[5] = .nan
    try LoRACheckpoint.save(a, to: dir, baseModel: nil)
    #expect(throws: ModelError.self) { try LoRACheckpoint.loadWeights(into: b, from: dir) }
    let fewer = LoRAAdapters(layout: try LoRALayout(m.config, settings: LoRASettings(rank: 4, targets: ["q_proj"])), rows: 4)
    #expect(throws: ModelError.self) { try LoRACheckpoint.loadWeights(into: fewer, from: dir) }
  }
}
