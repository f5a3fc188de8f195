import AgoraImport
import AgoraModel
import Foundation

extension FederationConfig {
  /// The model every party trains: the preset's shape, or the pilot checkpoint's (`model.init`, with its hash as
  /// `base`), with the tokenizer's vocabulary.
  public func modelConfig(tokenizer: Tokenizer) throws -> GPTConfig {
    var c: GPTConfig
    if let dir = modelInit {
      let path = (dir as NSString).appendingPathComponent(Checkpoint.configFile)
      guard let d = FileManager.default.contents(atPath: path) else { throw ConfigError(file: self.path, key: "model.init", problem: "\(path) is missing or unreadable") }
      do {
        c = try HuggingFaceConfig(data: d).shape
        c.base = try HuggingFaceImport.checkpointHash(dir)
      } catch let e as ImportError { throw ConfigError(file: self.path, key: "model.init", problem: e.description) }
    } else {
      c = try GPTConfig.preset(preset)
    }
    c.vocabSize = tokenizer.vocabSize
    return c
  }

  /// Version 0 from the pilot checkpoint (`model.init`), read and checked whole; nil without one.
  public func pilot() throws -> ImportedModel? {
    guard let dir = modelInit else { return nil }
    do { return try HuggingFaceImport.read(dir) } catch let e as ImportError {
      throw ConfigError(file: path, key: "model.init", problem: e.description)
    }
  }
}
