import AgoraDigest
import AgoraModel
import AgoraStorage
import AgoraTensor
import AgoraText
import Foundation

/// Where an imported model came from: recorded as version 0's base in the registry, named by `agora show`
/// and the model card, and checked by every node against its own copy.
public struct BaseModel: Codable, Equatable, Sendable {
  /// `blake3:` and the hex BLAKE3 of the checkpoint (`HuggingFaceImport.checkpointHash`).
  public var hash: String
  /// The directory's last path component.
  public var directory: String
  /// config.json's `_name_or_path`, when it has one.
  public var nameOrPath: String?
  /// The `license:` of the directory's README.md front matter (the Hugging Face card), when it gives one.
  public var license: String?
  /// `GPT2LMHeadModel` or `LlamaForCausalLM`.
  public var architecture: String
  /// The stored dtypes of its weights (e.g. `BF16`), converted to binary32 at import.
  public var dtypes: [String]
  public var parameters: Int
  /// What the import changed beyond the dtype (e.g. a tied LLaMA head given its own copy).
  public var notes: [String]
  /// A fine-tuning federation's base as it holds it (the chat template's rows added): the registry blob
  /// (`header ‖ parameters`, hex BLAKE2b-256) that adapter versions are merged into at export.
  public var weights: String? = nil
  /// A fine-tuning federation's method, as its version headers state it (`lora r=16 alpha=32 … template=chatml`,
  /// or `full template=chatml`); nil for a federation that pre-trains from a pilot checkpoint.
  public var fineTune: String? = nil

  enum CodingKeys: String, CodingKey {
    case hash, directory, license, architecture, dtypes, parameters, notes, weights
    case nameOrPath = "name_or_path"
    case fineTune = "fine_tune"
  }

  /// One line for people: "tiny-llama (LlamaForCausalLM, 1.2M parameters, Apache-2.0, blake3:ab12…)".
  public var summary: String {
    let name = nameOrPath.flatMap { $0.isEmpty ? nil : $0 } ?? directory
    return "\(name) (\(architecture), \(parameters) parameters\(license.map { ", licence \($0)" } ?? ""), \(hash.prefix(19))…)"
  }
}

/// A Hugging Face checkpoint read into Agora's layout.
public struct ImportedModel {
  public let config: GPTConfig
  public let tokenizer: Tokenizer
  /// The flat parameter buffer in `ParameterLayout(config)`'s order, binary32.
  public let parameters: FloatBuffer
  public let base: BaseModel
  /// config.json's `bos_token_id` (written back on export).
  public let bosTokenID: Int?
}

/// Reads `GPT2LMHeadModel` and `LlamaForCausalLM` directories (config.json, model.safetensors or a sharded
/// index, tokenizer.json) into Agora's layout, refusing by name anything the trainer does not implement, and
/// writes them as an Agora model directory. Nothing is half-imported: the output appears whole or not at all.
public enum HuggingFaceImport {
  public static let baseFile = "agora-base.json"
  public static let indexFile = "model.safetensors.index.json"

  /// The weight files of `dir`: `model.safetensors`, or the shards a `model.safetensors.index.json` names.
  /// Returns (file names, tensor name → file name).
  static func weightFiles(_ dir: String) throws -> ([String], [String: String]) {
    let single = (dir as NSString).appendingPathComponent(Checkpoint.modelFile)
    let index = (dir as NSString).appendingPathComponent(indexFile)
    if FileManager.default.fileExists(atPath: index) {
      guard let d = FileManager.default.contents(atPath: index),
            let o = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any], let map = o["weight_map"] as? [String: String] else {
        throw ImportError.file(path: index, problem: "not a JSON object with a weight_map of tensor → file")
      }
      for f in Set(map.values) where f.contains("/") || f.hasPrefix(".") { throw ImportError.file(path: index, problem: "shard \(jsonString(f)) is not a file name in the directory") }
      return (Set(map.values).sorted(), map)
    }
    guard FileManager.default.fileExists(atPath: single) else {
      let bin = FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("pytorch_model.bin"))
      throw ImportError.file(path: single, problem: bin ? "missing: only safetensors weights are read (pytorch_model.bin is a pickle; convert it with transformers' save_pretrained)" : "missing (and no \(indexFile))")
    }
    return ([Checkpoint.modelFile], [:])
  }

  /// The checkpoint's identity: BLAKE3 over, for config.json, tokenizer.json and each weight file in name order,
  /// the file's name, a zero octet and the file's own 32-octet BLAKE3. Every node can recompute it from its copy.
  public static func checkpointHash(_ dir: String) throws -> String {
    let (weights, _) = try weightFiles(dir)
    var all = [UInt8]()
    for name in [Checkpoint.configFile, Checkpoint.tokenizerFile] + weights {
      let path = (dir as NSString).appendingPathComponent(name)
      guard let d = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
        throw ImportError.file(path: path, problem: "cannot read the file")
      }
      all += Array(name.utf8) + [0]
      all += d.withUnsafeBytes { Blake3.hash($0) }
    }
    return "blake3:" + hex(Blake3.hash(all))
  }

  /// The `license:` of a Hugging Face card's YAML front matter.
  static func cardLicense(_ dir: String) -> String? {
    guard let s = try? String(contentsOfFile: (dir as NSString).appendingPathComponent("README.md"), encoding: .utf8), s.hasPrefix("---") else { return nil }
    for line in s.split(separator: "\n", omittingEmptySubsequences: false).dropFirst() {
      if line.trimmingCharacters(in: .whitespaces) == "---" { break }
      if line.hasPrefix("license:") {
        let v = line.dropFirst("license:".count).trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
        return v.isEmpty ? nil : v
      }
    }
    return nil
  }

  /// Reads `dir` into Agora's layout: config (strictly), tokenizer (its vocabulary must be the config's), and
  /// every tensor by name, converted to binary32, checked for shape and finiteness.
  public static func read(_ dir: String) throws -> ImportedModel {
    let configPath = (dir as NSString).appendingPathComponent(Checkpoint.configFile)
    guard let configData = FileManager.default.contents(atPath: configPath) else { throw ImportError.file(path: configPath, problem: "missing or unreadable") }
    let hf = try HuggingFaceConfig(data: configData)
    var c = hf.shape
    let hash = try checkpointHash(dir)
    c.base = hash
    let tokPath = (dir as NSString).appendingPathComponent(Checkpoint.tokenizerFile)
    guard let tokData = FileManager.default.contents(atPath: tokPath) else { throw ImportError.file(path: tokPath, problem: "missing: the tokenizer comes from the checkpoint's directory") }
    var eos = try Tokenizer.eosToken(configAt: (dir as NSString).appendingPathComponent("tokenizer_config.json"))
    let tokenizer: Tokenizer
    do {
      if eos == nil, let id = hf.eosTokenIDs.first,
         let added = ((try? JSONSerialization.jsonObject(with: tokData)) as? [String: Any])?["added_tokens"] as? [[String: Any]] {
        // No tokenizer_config.json: config.json's eos_token_id names the end-of-text token.
        eos = added.first { ($0["id"] as? NSNumber)?.intValue == id }?["content"] as? String
      }
      tokenizer = try Tokenizer(json: tokData, source: tokPath, endOfText: eos)
    } catch let e as ModelError { throw ImportError.file(path: tokPath, problem: "\(e)".replacingOccurrences(of: tokPath + ": ", with: "")) }
    guard tokenizer.vocabSize == c.vocabSize else {
      throw ImportError.config(field: "vocab_size", problem: "\(c.vocabSize), but tokenizer.json has \(tokenizer.vocabSize) tokens")
    }

    let (files, map) = try weightFiles(dir)
    var stores: [String: SafeTensors] = [:]
    for f in files {
      let path = (dir as NSString).appendingPathComponent(f)
      guard FileManager.default.fileExists(atPath: path) else { throw ImportError.file(path: path, problem: "missing (named by \(indexFile))") }
      do { stores[f] = try SafeTensors(path: path) } catch let e as ModelError { throw ImportError.file(path: path, problem: "\(e)".replacingOccurrences(of: path + ": ", with: "")) }
    }
    // Which file holds each tensor (an index may not name a tensor a shard holds, or name one it does not).
    var holder: [String: String] = [:]
    for (f, st) in stores {
      for name in st.entries.keys {
        if let other = holder[name] { throw ImportError.tensor(name: name, problem: "stored twice (\(other) and \(f))") }
        if let m = map[name], m != f { throw ImportError.tensor(name: name, problem: "the index says \(m), but it is in \(f)") }
        holder[name] = f
      }
    }
    for (name, f) in map where holder[name] == nil { throw ImportError.tensor(name: name, problem: "named by the index (in \(f)) but not in it") }

    let layout = ParameterLayout(c)
    let params = FloatBuffer(count: layout.count)
    var used = Set<String>(), dtypes = Set<String>(), notes: [String] = []
    // GPT-2's names in Agora's layout are the base model's; transformers saves GPT2LMHeadModel's under "transformer.".
    func source(_ name: String) -> String? {
      if holder[name] != nil { return name }
      if c.architecture == .gpt2, holder["transformer." + name] != nil { return "transformer." + name }
      return nil
    }
    for t in layout.tensors {
      var src = source(t.name)
      if src == nil, t.name == "lm_head.weight", hf.tiedHead {
        src = source("model.embed_tokens.weight")
        notes.append("the tied output head (tie_word_embeddings) was given its own copy of model.embed_tokens.weight")
      }
      guard let name = src, let st = stores[holder[name]!] else { throw ImportError.tensor(name: t.name, problem: "missing") }
      do { dtypes.insert(try st.copyConverting(name, shape: t.shape, into: params.pointer + t.offset).rawValue) } catch let e as ModelError {
        throw ImportError.tensor(name: name, problem: "\(e)".replacingOccurrences(of: st.path + ": ", with: ""))
      }
      used.insert(name)
      let p = params.pointer + t.offset
      for i in 0..<t.count where !p[i].isFinite { throw ImportError.tensor(name: name, problem: "value \(i) is \(p[i])") }
    }
    // What transformers may store besides: GPT-2's causal-mask buffers and its tied head (which must then be the
    // embedding), LLaMA's rotary frequencies. Anything else is a tensor Agora would silently drop.
    for name in holder.keys.sorted() where !used.contains(name) {
      if [".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq"].contains(where: name.hasSuffix) { continue }
      if c.architecture == .gpt2, name == "lm_head.weight", let st = stores[holder[name]!] {
        let head = FloatBuffer(count: c.vocabSize * c.channels)
        try? st.copyConverting(name, shape: [c.vocabSize, c.channels], into: head.pointer)
        let wte = params.pointer + layout.wte
        guard (0..<head.count).allSatisfy({ head.pointer[$0] == wte[$0] }) else {
          throw ImportError.tensor(name: name, problem: "differs from wte.weight: GPT-2 with an untied head is not supported")
        }
        continue
      }
      throw ImportError.tensor(name: name, problem: "unexpected: \(hf.architecture) of this config has no such tensor")
    }
    var base = BaseModel(hash: hash, directory: ((dir as NSString).standardizingPath as NSString).lastPathComponent,
                         nameOrPath: hf.nameOrPath, license: cardLicense(dir), architecture: hf.architecture, dtypes: dtypes.sorted(),
                         parameters: layout.count, notes: notes)
    // An Agora import of another checkpoint keeps that one's origin (its hash is still this directory's).
    if let earlier = try Self.base(of: dir) {
      base.nameOrPath = base.nameOrPath ?? earlier.nameOrPath ?? earlier.directory
      base.license = base.license ?? earlier.license
      base.notes = earlier.notes + base.notes + ["imported from \(earlier.hash)"]
      base.dtypes = earlier.dtypes
    }
    return ImportedModel(config: c, tokenizer: tokenizer, parameters: params, base: base, bosTokenID: hf.bosTokenID)
  }

  /// Imports `dir` into `out` (an Agora model directory, which transformers also loads, with `agora-base.json`
  /// saying where it came from). `out` must not exist; it appears whole or not at all.
  @discardableResult
  public static func run(_ dir: String, out: String) throws -> ImportedModel {
    let m = try read(dir)
    try write(m, to: out)
    return m
  }

  /// Writes an imported model as an Agora model directory, atomically (a temporary directory renamed into place).
  public static func write(_ m: ImportedModel, to out: String) throws {
    guard !FileManager.default.fileExists(atPath: out) else { throw ImportError.output(path: out, problem: "already exists; nothing was written") }
    let parent = ((out as NSString).standardizingPath as NSString).deletingLastPathComponent
    let tmp = (parent.isEmpty ? "." : parent) + "/.\((out as NSString).lastPathComponent).importing-\(UUID().uuidString.prefix(8))"
    do {
      try Checkpoint.save(parameters: m.parameters, config: m.config, tokenizer: m.tokenizer, to: tmp, bosTokenID: m.bosTokenID)
      let enc = JSONEncoder()
      enc.outputFormatting = [.prettyPrinted, .sortedKeys]
      try AtomicFile.write(try enc.encode(m.base), to: (tmp as NSString).appendingPathComponent(baseFile))
      try FileManager.default.moveItem(atPath: tmp, toPath: out)
    } catch {
      try? FileManager.default.removeItem(atPath: tmp)
      throw error
    }
  }

  /// The base an Agora model directory records (`agora-base.json`), if it was imported.
  public static func base(of dir: String) throws -> BaseModel? {
    let path = (dir as NSString).appendingPathComponent(baseFile)
    guard let d = FileManager.default.contents(atPath: path) else { return nil }
    do { return try JSONDecoder().decode(BaseModel.self, from: d) } catch { throw ImportError.file(path: path, problem: "not a base-model record: \(error)") }
  }
}
