import AgoraFineTune
import AgoraImport
import AgoraModel
import AgoraTrainer
import Foundation

/// `[finetune]` of federation.toml: the federation fine-tunes its base on the members' chat data (issue #34).
/// The base is `model.init`: a checkpoint `agora model import` wrote, or a version of a federation that
/// `agora export` wrote. Its hash is in every version's header, so a node holding another base is refused at
/// JOIN and cannot take a version for its own.
///
///     [finetune]
///     method = "lora"            # or "full": every parameter trains
///     rank = 16                  # LoRA's r, α, dropout and the modules it adapts (Hugging Face names)
///     alpha = 32
///     dropout = 0
///     targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
///     template = "chatml"        # or "llama3": how conversations are rendered (its tokens join the vocabulary)
public struct FineTuneTerms: Sendable, Equatable {
  public var method: FineTuneSettings.Method
  /// Rank, α, dropout and targets (LoRA); the token rows are the template's new tokens (`FederatedModel`).
  public var lora: LoRASettings?
  public var template: ChatTemplate

  /// The recommended targets of a federation: the attention projections, whose update at r = 16 is about a
  /// hundredth of the model's (every linear layer of the blocks would be 2.6 %: `agora bench lora`).
  public static func defaultTargets(for architecture: GPTConfig.Architecture) -> [String] {
    architecture == .llama ? ["q_proj", "k_proj", "v_proj", "o_proj"] : ["c_attn"]
  }

  static let keys = ["method", "rank", "alpha", "dropout", "targets", "template"]

  /// Reads `[finetune]` (nil without it); `base` is `model.init`, which a fine-tuning federation needs.
  init?(_ f: TOMLFile, base: String?) throws {
    guard Self.keys.contains(where: { f.value("finetune." + $0) != nil }) else { return nil }
    guard let base else {
      throw f.fail("model.init", "a fine-tuning federation ([finetune]) starts from a base model: name its directory (agora model import, or agora export of a version)")
    }
    method = try f.choice("finetune.method", default: FineTuneSettings.Method.lora)
    template = try f.choice("finetune.template", default: ChatTemplate.chatml)
    let cfg = (base as NSString).appendingPathComponent(Checkpoint.configFile)
    // The architecture decides the module names; a missing or unreadable base is reported by requireFiles.
    // (Without it the targets are checked when the model is made: `FederationConfig.federatedModel`.)
    let read = FileManager.default.contents(atPath: cfg).flatMap { try? HuggingFaceConfig(data: $0).shape.architecture }
    let architecture = read ?? .llama
    if method == .lora {
      let targets = try f.strings("finetune.targets") ?? Self.defaultTargets(for: architecture)
      let known = LoRASettings.modules(for: architecture)
      var s = LoRASettings(rank: try f.int("finetune.rank", default: 16, range: 1...4096),
                           alpha: Float(try f.double("finetune.alpha", default: 32, range: 1e-6...1e6)),
                           dropout: Float(try f.double("finetune.dropout", default: 0, range: 0...0.9)),
                           targets: known.filter(targets.contains) + targets.filter { !known.contains($0) })
      if read != nil { do { try s.validate(for: architecture) } catch { throw f.fail("finetune.targets", "\(error)") } }
      s.tokens = []
      lora = s
    } else {
      for k in ["rank", "alpha", "dropout", "targets"] where f.value("finetune." + k) != nil {
        throw f.fail("finetune." + k, "method = \"full\" trains every parameter: LoRA's settings do not apply")
      }
      lora = nil
    }
  }

  /// The template a fine-tuning record (`BaseModel.fineTune`, "… template=NAME") names.
  public static func template(ofLine line: String) -> ChatTemplate? {
    line.split(separator: " ").first { $0.hasPrefix("template=") }.flatMap { ChatTemplate(rawValue: String($0.dropFirst("template=".count))) }
  }

  /// One line for logs and the model card: "LoRA r 16, α 32 on q_proj, k_proj, v_proj, o_proj (chatml)".
  public var summary: String {
    guard let l = lora else { return "full fine-tuning (\(template.rawValue))" }
    return "LoRA r \(l.rank), α \(jsonNumber(l.alpha))\(l.dropout > 0 ? ", dropout \(l.dropout)" : "") on \(l.targets.joined(separator: ", ")) (\(template.rawValue))"
  }
}

private func jsonNumber(_ x: Float) -> String { x == x.rounded() && abs(x) < 1e9 ? String(Int(x)) : String(x) }
