import AgoraRounds
import AgoraCrypto
import AgoraDisclosure
import AgoraFineTune
import AgoraImport
import AgoraModel
import AgoraRegistry
import AgoraStorage
import AgoraTensor
import AgoraWire
import Foundation

/// Writes a version as a Hugging Face model directory: `config.json`, `model.safetensors`, `tokenizer.json`,
/// `generation_config.json`, a `README.md` model card with the training-data summary, and
/// `training_data.json`. The weights blob is hash-checked and the version's signature verified first.
public enum VersionExport {
  public struct Result: Sendable {
    public var summary: TrainingDataSummary
    public var signatureValid: Bool
    public var content: TrainingContentSummary
  }

  /// Why `export --release` wrote nothing: every contributor and field the version's public summary of training
  /// content lacks.
  public struct ReleaseRefused: Error, CustomStringConvertible {
    public var version: Int
    public var problems: [String]
    public var description: String {
      "version \(version) cannot be released: its public summary of training content lacks what the AI Act's template asks (nothing was written):\n"
        + problems.map { "  - " + $0 }.joined(separator: "\n")
    }
  }

  /// A version's weights (hash-checked), shape and tokenizer, read from the registry. A fine-tuning federation's
  /// LoRA version is merged into its base (kept in the registry) first: the parameters are the model it computes.
  public static func load(_ number: Int, from store: Registry) throws -> (config: GPTConfig, parameters: FloatBuffer, tokenizer: Tokenizer) {
    let l = try loadVersion(number, from: store)
    return (l.config, l.parameters, l.tokenizer)
  }

  /// A version as `load` reads it, with a fine-tuning federation's method (`federated`, whose `template` is the
  /// chat template) and a LoRA version's adapter values (in `federated.lora`'s layout).
  public struct Loaded {
    public var config: GPTConfig
    public var parameters: FloatBuffer
    public var tokenizer: Tokenizer
    public var federated: FederatedModel?
    public var adapter: FloatBuffer?
    /// The pilot checkpoint the federation started from (version 0's record), if any.
    public var base: BaseModel?
  }

  public static func loadVersion(_ number: Int, from store: Registry) throws -> Loaded {
    let v = try store.version(number)
    guard v.freedAt == nil else { throw RegistryError.notFound("version \(number)'s blobs were freed by agora gc; only its record remains") }
    let config = try parseConfig(v.config)
    if let problem = store.checkBlob(v.tokenizer, what: "tokenizer of version \(number)") { throw problem }
    // A blob has no tokenizer_config.json beside it: the version's config.json names the end-of-text token.
    let eos = ((try? JSONSerialization.jsonObject(with: Data(v.config.utf8))) as? [String: Any])?["eos_token_id"] as? Int
    let path = store.blobPath(v.tokenizer)
    guard let json = FileManager.default.contents(atPath: path) else { throw RegistryError.notFound("tokenizer of version \(number) at \(path)") }
    let tokenizer = try Tokenizer(json: json, source: path, endOfTextID: eos)
    let base = try baseModel(of: number, in: store)
    let federated = try base?.fineTune.map { try FederatedModel(config: config, tokenizer: tokenizer, fineTune: $0) }
    if let fm = federated, let layout = fm.lora {
      // The version blob is peft's adapter_model.safetensors (header ‖ values); the base's blob is the model's.
      let values = FloatBuffer(count: fm.count)
      try readBlob(v.hash, header: fm.header, into: values, store: store, what: "adapter of version \(number)")
      guard let w = base?.weights else { throw RegistryError.notFound("the base of version \(number)'s adapters (version 0's record names none)") }
      let params = FloatBuffer(count: ParameterLayout(config).count)
      try readBlob(w, header: Checkpoint.weightsHeader(config), into: params, store: store, what: "base of version \(number)")
      let adapters = LoRAAdapters(layout: layout, rows: 1)
      adapters.parameters.copy(from: values)
      adapters.merge(into: params)
      return Loaded(config: config, parameters: params, tokenizer: tokenizer, federated: fm, adapter: values, base: base)
    }
    let params = FloatBuffer(count: ParameterLayout(config).count)
    // The weights blob is itself a safetensors file (header ‖ parameters); the export adds Agora's metadata.
    try readBlob(v.hash, header: Checkpoint.weightsHeader(config), into: params, store: store, what: "weights of version \(number)")
    return Loaded(config: config, parameters: params, tokenizer: tokenizer, federated: federated, adapter: nil, base: base)
  }

  /// Reads blob `hash` (checked) as `header ‖ values`, refusing another header.
  static func readBlob(_ hash: String, header: [UInt8], into values: FloatBuffer, store: Registry, what: String) throws {
    var head = [UInt8](repeating: 0, count: header.count)
    try head.withUnsafeMutableBytes { h in
      try store.readBlob(hash, into: [h, UnsafeMutableRawBufferPointer(start: values.pointer, count: values.count * 4)], what: what)
    }
    guard head == header else { throw RegistryError.corruptBlob(hash: hash, path: store.blobPath(hash), got: "a header of another model (\(what))") }
  }

  /// Writes version `number` to `dir`. A fine-tuning federation's version also carries its chat template
  /// (`tokenizer_config.json`, generation ending at the end of a turn); a LoRA version is written merged into its
  /// base, with the adapter itself in `dir/adapter/` (`PeftModel.from_pretrained(base, dir/adapter)` loads it).
  /// Writes `training-content-summary.md` and `.json` (the AI Act's public summary, from the contributors'
  /// declarations and `provider`) beside the model. With `release`, a summary that lacks a mandatory field
  /// refuses the export before anything is written (`ReleaseRefused`).
  public static func export(_ number: Int, from store: Registry, signKey: [UInt8], to dir: String, provider: Provider = Provider(), release: Bool = false,
                            shardBytes: Int = Checkpoint.defaultShardBytes) throws -> Result {
    let v = try store.version(number)
    let content = try TrainingContentSummary.of(number, in: store, provider: provider, releaseDay: release ? Declaration.today() : nil)
    if release, !content.releaseProblems.isEmpty { throw ReleaseRefused(version: number, problems: content.releaseProblems) }
    let l = try loadVersion(number, from: store)
    let (config, params, tokenizer) = (l.config, l.parameters, l.tokenizer)
    let valid = try store.signatureValid(v, signKey: signKey)
    let summary = try TrainingDataSummary.of(number, in: store)
    let base = l.base
    let chat = l.federated?.template.map { ($0.jinja, $0.endOfTurn) }
    try Checkpoint.save(parameters: params, config: config, tokenizer: tokenizer, to: dir,
                        metadata: ["agora.federation": store.federation, "agora.version": String(number), "agora.hash": v.hash], chat: chat,
                        shardBytes: shardBytes)
    if chat == nil {
      let gen = "{\n  \"bos_token_id\": \(tokenizer.prefixIDs.first ?? tokenizer.eotID),\n  \"eos_token_id\": \(tokenizer.eotID),\n  \"do_sample\": true,\n  \"temperature\": 0.8,\n  \"top_k\": 50,\n  \"max_new_tokens\": 64\n}\n"
      try AtomicFile.write(Data(gen.utf8), to: dir + "/generation_config.json")
    }
    if let fm = l.federated, let layout = fm.lora, let values = l.adapter {
      let adapters = LoRAAdapters(layout: layout, rows: 1)
      adapters.parameters.copy(from: values)
      try LoRACheckpoint.save(adapters, to: dir + "/adapter", baseModel: base.map { $0.nameOrPath ?? $0.directory },
                              metadata: ["agora.federation": store.federation, "agora.version": String(number), "agora.hash": v.hash])
    }
    try AtomicFile.write(try summary.json(), to: dir + "/training_data.json")
    try AtomicFile.write(try content.json(), to: dir + "/" + contentSummaryFile + ".json")
    try AtomicFile.write(Data(content.markdown.utf8), to: dir + "/" + contentSummaryFile + ".md")
    let vocabulary = VocabularySummary.load(from: store, tokenizer: v.tokenizer)
    if let vocabulary { try AtomicFile.write(vocabulary.raw, to: dir + "/vocabulary.json") }
    try AtomicFile.write(Data(modelCard(v, summary: summary, config: config, signatureValid: valid, vocabulary: vocabulary, base: base, content: content).utf8),
                         to: dir + "/README.md")
    return Result(summary: summary, signatureValid: valid, content: content)
  }

  /// The name (without extension) of the public summary of training content beside an exported model.
  public static let contentSummaryFile = "training-content-summary"

  /// The model card `export` writes for a version (its signature checked with `signKey`).
  public static func modelCard(_ number: Int, from store: Registry, signKey: [UInt8], provider: Provider = Provider()) throws -> String {
    let v = try store.version(number)
    return modelCard(v, summary: try TrainingDataSummary.of(number, in: store), config: try parseConfig(v.config),
                     signatureValid: try store.signatureValid(v, signKey: signKey), vocabulary: VocabularySummary.load(from: store, tokenizer: v.tokenizer),
                     base: try baseModel(of: number, in: store), content: try TrainingContentSummary.of(number, in: store, provider: provider))
  }

  /// The pilot checkpoint version `number`'s lineage starts from (version 0's base), if any.
  public static func baseModel(of number: Int, in store: Registry) throws -> BaseModel? {
    guard let root = try store.lineage(number).last, let json = root.base else { return nil }
    return try? JSONDecoder().decode(BaseModel.self, from: Data(json.utf8))
  }

  static func parseConfig(_ json: String) throws -> GPTConfig {
    try Checkpoint.readConfig(data: Data(json.utf8), source: "the registry's config.json")
  }


  static func modelCard(_ v: VersionRecord, summary: TrainingDataSummary, config: GPTConfig, signatureValid: Bool, vocabulary: VocabularySummary?,
                        base: BaseModel? = nil, content: TrainingContentSummary) -> String {
    let baseYAML = base.map { b in "base_model: \(jsonString(b.nameOrPath ?? b.directory))\n" } ?? ""
    // Hugging Face's card keys: the languages trained (language tags only), the model's licence, public datasets on the Hub.
    let languages = summary.tokensPerLanguage.keys.filter { $0 != "unknown" && $0.count <= 8 && $0.allSatisfy { $0.isLetter || $0 == "-" } }.sorted()
    let languageYAML = languages.isEmpty ? "" : "language: [\(languages.joined(separator: ", "))]\n"
    let licenseYAML = content.licenseOfModel.map { spdx -> String in
      let hf = TrainingContentSummary.huggingFaceLicense(spdx)
      return "license: \(hf.license)\n" + (hf.name.map { "license_name: \(jsonString($0))\n" } ?? "")
    } ?? ""
    let hub = "https://huggingface.co/datasets/"
    let datasets = content.s21.sources.compactMap { $0.url }.filter { $0.hasPrefix(hub) }.map { String($0.dropFirst(hub.count)) }
    let datasetsYAML = datasets.isEmpty ? "" : "datasets: [\(datasets.map(jsonString).joined(separator: ", "))]\n"
    let baseLine = base.map { b in
      guard let ft = b.fineTune else {
        return "- Base model: \(b.nameOrPath ?? b.directory) (\(b.architecture)\(b.license.map { ", licence \($0)" } ?? "")), imported as version 0; checkpoint hash `\(b.hash)`.\n"
      }
      let lora = ft.hasPrefix("lora")
      return "- Base model: \(b.nameOrPath ?? b.directory) (\(b.architecture)\(b.license.map { ", licence \($0)" } ?? "")), checkpoint hash `\(b.hash)`;"
        + " fine-tuned on the members' chat data (loss on the answers only): `\(ft)`.\n"
        + (lora ? "- This version is a LoRA adapter on that base (`adapter/`, for peft; its version hash covers the base's hash). The weights here are the base with the adapter merged in.\n"
                : "- Every parameter of the base was fine-tuned.\n")
    } ?? ""
    let bpb = summary.bitsPerByte.sorted { $0.key < $1.key }.map { "| \(TrainingDataSummary.cell($0.key)) | \(String(format: "%.3f", $0.value)) |" }.joined(separator: "\n")
    let llama = config.architecture == .llama
    let (tag, kind, cls) = llama ? ("llama", "A LLaMA-style model", "LlamaForCausalLM") : ("gpt2", "A GPT-2 model", "GPT2LMHeadModel")
    let heads = llama ? "\(config.heads) query and \(config.kvHeads) key/value heads, MLP width \(config.intermediate)" : "\(config.heads) heads"
    return """
    ---
    library_name: transformers
    pipeline_tag: text-generation
    tags: [\(tag), federated-learning, agora, multilingual]
    \(languageYAML)\(licenseYAML)\(baseYAML)\(datasetsYAML)---
    # \(TrainingDataSummary.cell(summary.federation)), version \(v.number)

    \(kind) (\(config.layers) layers, \(config.channels) channels, \(heads), context \(config.contextLength),
    vocabulary \(config.vocabSize)) trained by federated learning with Agora: each contributor
    trained on its own text and sent only signed, sealed model updates; the coordinator aggregated them
    (\(v.optimizerKind)) into this version.

    - Version \(v.number) of federation \(TrainingDataSummary.cell(summary.federation)), made in round \(v.round), parent \(v.parent.map(String.init) ?? "none").
    - Weights hash (BLAKE2b-256 of the parameters, binary32): `\(v.hash)`.
    - Signed by the coordinator (Ed25519): signature \(signatureValid ? "valid" : "INVALID") at export.
    \(baseLine)    \(VersionRecord.privacyLine(v).map { "- " + $0 + "\n" } ?? "")

    ```python
    from transformers import \(cls), PreTrainedTokenizerFast
    model = \(cls).from_pretrained("THIS_DIRECTORY")
    tok = PreTrainedTokenizerFast(tokenizer_file="THIS_DIRECTORY/tokenizer.json")
    ```

    ## Training data

    \(summary.markdown)
    The same summary is in `training_data.json`. The text itself never left the contributors.

    ## Public summary of training content (AI Act, Art. 53(1)(d))

    [training-content-summary.md](training-content-summary.md) (and `.json`) is this version's summary in the EU AI
    Office's template, compiled from the declarations its contributors signed: \(content.sourceLine).
    \(content.releaseProblems.isEmpty ? "Every field the template asks for is declared." : "Not yet complete for a release: \(content.releaseProblems.count) field(s) missing (agora export --release names them).")

    ## Evaluation (bits per byte on the federation's validation text)

    | language | bits/byte |
    | --- | --- |
    \(bpb.isEmpty ? "| (not evaluated) | |" : bpb)
    \(summary.institutions.isEmpty ? "" : "\n## Evaluation by the institutions (bits per byte on their own validation text, signed)\n\n" + summary.institutionsMarkdown)

    ## Tokenizer

    tokenizer.json, BLAKE2b-256 `\(v.tokenizer)`.
    \(vocabulary?.markdown ?? "It was given to the federation (not learned in a vocabulary phase).")
    """
  }
}

extension VersionRecord {
  /// One line on the version's client-level differential privacy, or nil without it.
  public static func privacyLine(_ v: VersionRecord) -> String? {
    guard let e = v.dpEpsilon, let d = v.dpDelta else { return nil }
    return String(format: "Client-level differential privacy: (ε = %.3g, δ = %g) for every contributor over the version's whole lineage (Rényi accountant; noise multiplier %.3f in this version's round).",
                  e, d, v.dpNoise ?? .nan)
  }
}

/// `vocabulary.json` of a federation whose vocabulary was learned in the vocabulary phase (SPEC §4.4): who
/// contributed counts for which languages, and how fairly the tokenizer serves them.
public struct VocabularySummary {
  public let raw: Data
  let object: [String: Any]

  /// The summary in the registry's data directory, if it belongs to `tokenizer` (its hash).
  public static func load(from store: Registry, tokenizer: String) -> VocabularySummary? {
    guard let d = FileManager.default.contents(atPath: store.dataDir + "/vocabulary.json"),
          let o = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any], o["tokenizer"] as? String == tokenizer else { return nil }
    return VocabularySummary(raw: d, object: o)
  }

  /// "A (de, fr), B (pl) and the public corpus (it)".
  public var contributorLine: String {
    var parts = ((object["contributors"] as? [[String: Any]]) ?? []).map { c -> String in
      "\(c["name"] as? String ?? "?") (\(((c["languages"] as? [String: Any]) ?? [:]).keys.sorted().joined(separator: ", ")))"
    }
    if let p = object["public_corpus"] as? [String: Any], !p.isEmpty { parts.append("the public corpus (\(p.keys.sorted().joined(separator: ", ")))") }
    return parts.joined(separator: ", ")
  }

  var markdown: String {
    var lines = ["Learned in the federation's vocabulary phase from pre-token counts, never from text (balance `\(object["balance"] ?? "?")`;"
                 + " pre-tokens seen fewer than \(object["min_count"] ?? "?") times or in fewer than \(object["min_documents"] ?? "?") documents stayed on the nodes)."]
    lines.append("")
    lines.append("| contributor | languages (octets of text counted) |")
    lines.append("| --- | --- |")
    for c in (object["contributors"] as? [[String: Any]]) ?? [] {
      let langs = ((c["languages"] as? [String: Any]) ?? [:]).keys.sorted().map { l -> String in
        let b = (((c["languages"] as? [String: Any])?[l] as? [String: Any])?["bytes"] as? NSNumber)?.intValue ?? 0
        return "\(l) (\(b))"
      }
      lines.append("| \(TrainingDataSummary.cell(c["name"] as? String ?? "?")) | \(langs.joined(separator: ", ")) |")
    }
    if let p = object["public_corpus"] as? [String: Any], !p.isEmpty {
      lines.append("| the coordinator's public corpus | \(p.keys.sorted().map { "\($0) (\((p[$0] as? NSNumber)?.intValue ?? 0))" }.joined(separator: ", ")) |")
    }
    let n = (object["parallel_sentences"] as? NSNumber)?.intValue ?? 0
    lines.append("")
    lines.append("| language | tokens per byte (on the counts) | premium on parallel text\(n > 0 ? " (\(n) sentences of gettext catalogues; 1 = the median language)" : "") |")
    lines.append("| --- | --- | --- |")
    let langs = (object["languages"] as? [String: Any]) ?? [:]
    for l in langs.keys.sorted() {
      let x = langs[l] as? [String: Any]
      let tpb = (x?["tokens_per_byte"] as? NSNumber)?.doubleValue ?? .nan
      let prem = (x?["premium"] as? NSNumber)?.doubleValue
      lines.append("| \(TrainingDataSummary.cell(l)) | \(String(format: "%.4f", tpb)) | \(prem.map { String(format: "%.3f", $0) } ?? "—") |")
    }
    return lines.joined(separator: "\n")
  }
}
