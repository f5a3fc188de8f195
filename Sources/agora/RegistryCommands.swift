import AgoraCrypto
import AgoraRounds
import AgoraCoordinator
import AgoraDisclosure
import AgoraRegistry
import AgoraWire
import ArgumentParser
import Foundation

/// What the registry commands share: the coordinator's configuration, whose data directory holds the registry.
struct RegistryOptions: ParsableArguments {
  @Option(help: "coordinator.toml of the federation (its data directory holds the registry).")
  var config: String = "Nodes/demo/coordinator.toml"

  func open() throws -> (Registry, CoordinatorConfig) {
    let cfg: CoordinatorConfig
    do { cfg = try CoordinatorConfig(path: config) } catch let e as ConfigError { throw CLIError(e.description) }
    do {
      return (try Registry(dataDir: cfg.dataDir, federation: cfg.federation.id, create: false), cfg)
    } catch let e as RegistryError { throw CLIError(e.description) }
  }

  /// The coordinator's Ed25519 key, from its card.
  func signKey(_ cfg: CoordinatorConfig) throws -> [UInt8] {
    do { return try EnrolmentCard.load(cfg.identity + "/" + Identity.cardFile).signPublic } catch {
      throw CLIError("\(cfg.identity)/\(Identity.cardFile): \(error)")
    }
  }
}

func formatDate(_ t: Double) -> String {
  let f = DateFormatter()
  f.dateFormat = "yyyy-MM-dd HH:mm:ss"
  f.timeZone = TimeZone(identifier: "UTC")
  return f.string(from: Date(timeIntervalSince1970: t)) + "Z"
}

/// Right-aligns `s` in `width` columns.
func pad(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }

struct VersionsCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "versions", abstract: "List the federation's versions: round, parent, hash, contributors, tokens, mean bits/byte.")
  @OptionGroup var options: RegistryOptions

  func run() throws {
    let (store, _) = try options.open()
    print("version | round | parent | hash         | contributors | tokens     | mean bits/byte | created")
    for v in try store.versions() {
      let parent = v.parent.map(String.init) ?? "-", bpb = v.meanBitsPerByte.map { String(format: "%.3f", $0) } ?? "-"
      print(String(format: "%7d | %5d | ", v.number, v.round) + pad(parent, 6) + " | " + String(v.hash.prefix(12))
            + String(format: " | %12d | %10d | ", v.contributors, v.tokens) + pad(bpb, 14) + " | " + formatDate(v.createdAt)
            + (v.freedAt == nil ? "" : "  (blobs freed)"))
    }
  }
}

struct ShowCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "show", abstract: "One version: lineage, contributors, per-language metrics, signature status.")
  @OptionGroup var options: RegistryOptions
  @Argument(help: "Version number (default: the latest).")
  var version: Int?
  @Flag(help: "Print the training-data summary as JSON instead.")
  var json = false

  func run() throws {
    let (store, cfg) = try options.open()
    guard let n = try version ?? store.latestVersion()?.number else { throw CLIError("the registry holds no version") }
    let v: VersionRecord
    do { v = try store.version(n) } catch let e as RegistryError { throw CLIError(e.description) }
    let summary = try TrainingDataSummary.of(n, in: store)
    if json { print(String(decoding: try summary.json(), as: UTF8.self)); return }
    let lineage = try store.lineage(n)
    let ok = store.signatureValid(v, parentHash: lineage.dropFirst().first?.hash, signKey: try options.signKey(cfg))
    print("version \(n) of \(store.federation): round \(v.round), made \(formatDate(v.createdAt)), outer optimizer \(v.optimizerKind), preset \(v.preset)")
    print("hash       \(v.hash)")
    print("signature  \(ok ? "valid" : "INVALID") (coordinator key \(hex(try options.signKey(cfg)).prefix(16))…)")
    print("blobs      \(v.freedAt == nil ? (store.checkBlob(v.hash, what: "weights") == nil ? "weights present and intact" : "weights MISSING or CORRUPT") : "freed by gc")")
    print("lineage    " + lineage.map { "\($0.number) (\($0.hash.prefix(8)))" }.joined(separator: " ← "))
    if let b = try VersionExport.baseModel(of: n, in: store) {
      let how = b.fineTune == nil ? "imported as version 0" : "fine-tuned from"
      print("base model \(b.nameOrPath ?? b.directory): \(b.architecture), \(b.parameters) parameters\(b.license.map { ", licence \($0)" } ?? ""), \(how) \(b.directory) (\(b.dtypes.joined(separator: ", ")))")
      print("           checkpoint \(b.hash)")
      if let ft = b.fineTune {
        print("fine-tune  \(ft)")
        print("           " + (ft.hasPrefix("lora") ? "each version is an adapter on the base (kept as blob \(b.weights?.prefix(16) ?? "?")…); agora export writes it merged and as adapter/"
                                                    : "each version is the whole fine-tuned model"))
      }
    }
    if let vs = VocabularySummary.load(from: store, tokenizer: v.tokenizer) {
      print("tokenizer  \(v.tokenizer.prefix(16)) learned in the vocabulary phase from " + vs.contributorLine)
    } else {
      print("tokenizer  \(v.tokenizer.prefix(16)) (given to the federation)")
    }
    if let p = VersionRecord.privacyLine(v) { print("privacy    " + p) }
    let content = try TrainingContentSummary.of(n, in: store, provider: cfg.federation.provider)
    print("content    public summary of training content (AI Act): \(content.sourceLine); "
          + (content.releaseProblems.isEmpty ? "complete for a release" : "\(content.releaseProblems.count) field(s) missing for a release (agora summary \(n))"))
    print("\ncontributors to its lineage:")
    print(summary.markdown)
    if !summary.bitsPerByte.isEmpty {
      print("bits per byte: " + summary.bitsPerByte.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.3f", $0.value))" }.joined(separator: ", "))
    }
    if !summary.institutions.isEmpty {
      print("\nbits per byte the institutions report on their own validation text (signed):")
      print(summary.institutionsMarkdown, terminator: "")
    }
  }
}

struct VerifyCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "verify", abstract: "Re-hash every blob, check every signature and the lineage; the exit status says whether all holds.")
  @OptionGroup var options: RegistryOptions

  func run() throws {
    let (store, cfg) = try options.open()
    let r = try store.verify(signKey: try options.signKey(cfg))
    print("\(r.versions) versions, \(r.blobsChecked) blobs re-hashed (\(r.bytesChecked) bytes), \(r.problems.count) problems")
    for p in r.problems { print("  ✗ \(p)") }
    for n in r.notes { print("  · \(n)") }
    if !r.ok { throw ExitCode(1) }
    print("all versions verify")
  }
}

struct ExportCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "export", abstract: "Write a version as a Hugging Face model directory with a model card and training-data summary.")
  @OptionGroup var options: RegistryOptions
  @Argument(help: "Version number.")
  var version: Int
  @Option(help: "Output directory.")
  var out: String
  @Flag(help: "A release: refuse (and write nothing) unless the public summary of training content has every field the AI Act's template asks for.")
  var release = false
  @Option(name: .customLong("max-shard-size"), help: ArgumentHelp("Weights above this size are written as shards of at most this size with model.safetensors.index.json (e.g. 2GB, 500MB, 100KB, or octets).", valueName: "size"))
  var maxShardSize: String = "2GB"

  /// "2GB", "500MB", "100KB" (decimal, as transformers writes max_shard_size) or a number of octets.
  static func octets(_ s: String) throws -> Int {
    let units: [(String, Int)] = [("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000), ("B", 1)]
    let t = s.uppercased()
    for (u, f) in units where t.hasSuffix(u) {
      if let n = Double(t.dropLast(u.count)), n >= 1, n * Double(f) <= 1e15 { return Int(n * Double(f)) }
    }
    if let n = Int(t), n >= 1 { return n }
    throw CLIError("--max-shard-size \(s): expected a size such as 2GB, 500MB, 100KB or a number of octets (at least 1)")
  }

  func run() throws {
    let (store, cfg) = try options.open()
    let shardBytes = try ExportCommand.octets(maxShardSize)
    do {
      let r = try VersionExport.export(version, from: store, signKey: try options.signKey(cfg), to: out, provider: cfg.federation.provider, release: release,
                                       shardBytes: shardBytes)
      print("version \(version) written to \(out) (signature \(r.signatureValid ? "valid" : "INVALID"); \(r.summary.contributors.count) contributors, \(r.summary.tokens) tokens)")
      print("public summary of training content: \(out)/\(VersionExport.contentSummaryFile).md and .json (\(r.content.sourceLine))"
            + (r.content.releaseProblems.isEmpty ? "; complete for a release" : "; \(r.content.releaseProblems.count) field(s) missing for a release (agora summary \(version) lists them)"))
      if !r.signatureValid { throw ExitCode(1) }
    } catch let e as RegistryError { throw CLIError(e.description) }
    catch let e as VersionExport.ReleaseRefused { throw CLIError(e.description) }
  }
}

struct SummaryCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "summary",
    abstract: "A version's public summary of training content (the EU AI Office's template, AI Act Art. 53(1)(d)), compiled from the declarations of the contributors in its lineage.")
  enum Format: String, ExpressibleByArgument, CaseIterable { case md, json }
  @OptionGroup var options: RegistryOptions
  @Argument(help: "Version number (default: the latest).")
  var version: Int?
  @Option(help: "md (Markdown) or json (the template's section numbers as keys; Protocol/training-content-summary.schema.json).")
  var format: Format = .md

  func run() throws {
    let (store, cfg) = try options.open()
    guard let n = try version ?? store.latestVersion()?.number else { throw CLIError("the registry holds no version") }
    let s: TrainingContentSummary
    do { s = try TrainingContentSummary.of(n, in: store, provider: cfg.federation.provider) } catch let e as RegistryError { throw CLIError(e.description) }
    switch format {
    case .md: print(s.markdown, terminator: "")
    case .json: print(String(decoding: try s.json(), as: UTF8.self))
    }
    fflush(stdout)  // the summary before the note on standard error, when both go to one file
    if s.releaseProblems.isEmpty {
      FileHandle.standardError.write(Data("agora summary: complete: every field a release needs is declared\n".utf8))
    } else {
      FileHandle.standardError.write(Data(("agora summary: a release (agora export \(n) --release) would be refused; it lacks:\n"
                                           + s.releaseProblems.map { "  - " + $0 }.joined(separator: "\n") + "\n").utf8))
    }
  }
}

struct GCCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "gc", abstract: "Free the blobs of old versions (records and lineage stay).")
  @OptionGroup var options: RegistryOptions
  @Option(help: "Keep the newest N versions.")
  var keepLast: Int = 5
  @Option(help: "Also keep every version whose number is a multiple of K (0: none).")
  var keepEvery: Int = 0
  @Flag(help: "Say what would be freed, free nothing.")
  var dryRun = false

  func run() throws {
    let (store, _) = try options.open()
    guard keepLast >= 1, keepEvery >= 0 else { throw CLIError("--keep-last must be ≥ 1 and --keep-every ≥ 0") }
    let r = try store.gc(keepLast: keepLast, keepEvery: keepEvery, dryRun: dryRun)
    print("\(dryRun ? "would free" : "freed") \(r.freed.count) versions' blobs (\(r.bytesFreed) bytes); kept \(r.kept.map(String.init).joined(separator: ", "))")
    if !r.freed.isEmpty { print("freed: " + r.freed.map(String.init).joined(separator: ", ")) }
    if !r.orphans.isEmpty { print("\(dryRun ? "would remove" : "removed") \(r.orphans.count) files no version names") }
    for n in r.notes { print("note: \(n)") }
  }
}
