import AgoraCrypto
import AgoraData
import AgoraRounds
import AgoraModel
import Foundation

/// Prepares what the demo federation's configuration refers to: a tokenizer learned from the demo corpus,
/// and keys for the coordinator and every institution, with the institutions' cards enrolled.
/// Existing keys and tokenizer are kept.
enum DemoSetup {
  /// The node configurations of a federation's directory (every `.toml` but federation.toml and
  /// coordinator.toml), by file name, sorted.
  static func nodeConfigFiles(in dir: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: dir)
      .filter { $0.hasSuffix(".toml") && $0 != "federation.toml" && $0 != "coordinator.toml" }.sorted()
  }

  static func prepare(federation: String, nodeConfigs: [String]) throws {
    let fm = FileManager.default
    let fed = try FederationConfig(path: federation)
    // A federated vocabulary is learned by the coordinator from the nodes' count tables (the vocabulary phase);
    // otherwise the demo learns the shared one here from every institution's text.
    if fed.vocabulary == nil && !fm.fileExists(atPath: fed.tokenizer) {
      var bpe = BPETrainer()
      let sources = try LanguageSource.discover(fed.evalData.isEmpty ? [".agora/data/demo"] : fed.evalData)
      for s in sources {
        let d = FileHandle(forReadingAtPath: s.train)?.readData(ofLength: 1_000_000) ?? Data()
        bpe.addLanguage(s.name, texts: [String(decoding: d, as: UTF8.self)])
      }
      let preset = try GPTConfig.preset(fed.preset)
      try fm.createDirectory(atPath: (fed.tokenizer as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
      try bpe.train(vocabSize: preset.vocabSize).save(to: fed.tokenizer)
    }
    let coordDir = (fed.coordinatorCard as NSString).deletingLastPathComponent
    if !fm.fileExists(atPath: fed.coordinatorCard) {
      _ = try Identity.generate(in: coordDir, name: "Demo coordinator", institution: "Agora demo consortium", contact: "", coordinator: true)
    }
    for path in nodeConfigs {
      let n = try NodeConfig(path: path)
      if !fm.fileExists(atPath: n.identity + "/" + Identity.cardFile) {
        _ = try Identity.generate(in: n.identity, name: n.name, institution: n.name, contact: "", coordinator: false)
      }
    }
    let coord = try CoordinatorConfig(path: (federation as NSString).deletingLastPathComponent + "/coordinator.toml")
    try fm.createDirectory(atPath: coord.enrolled, withIntermediateDirectories: true)
    for path in nodeConfigs {
      let n = try NodeConfig(path: path)
      let dst = coord.enrolled + "/" + ((path as NSString).lastPathComponent)
      try? fm.removeItem(atPath: dst)
      try fm.copyItem(atPath: n.identity + "/" + Identity.cardFile, toPath: dst)
    }
  }
}
