import AgoraCrypto
import AgoraData
import AgoraModel
import AgoraStorage
import AgoraWire
import Foundation

/// One piece of the federation's public corpus, served to compute donors by content hash.
public struct PublicShard: Sendable, Equatable {
  public var language: String
  public var index: Int
  public var hash: [UInt8]
  public var path: String
  public var textBytes: Int
}

public enum ShardError: Error, Equatable, CustomStringConvertible {
  case malformed(String)
  public var description: String {
    switch self { case .malformed(let s): return "public shard: \(s)" }
  }
}

/// The public corpus cut into shards (`Protocol/SPEC.md` §5.1):
///
///     shard = "agora-shard 1 " ‖ language ‖ " " ‖ index ‖ LF ‖ UTF-8 text
///
/// Each language's train.txt is cut at line boundaries into pieces of about `bytes`; a last piece smaller than
/// a quarter of that joins the one before. Shards are listed interleaved by language (every language's first
/// shard, then every second one, …), so a rotation over them visits the languages in turn.
public enum PublicShards {
  static let prefix = "agora-shard 1 "

  public static func build(sources: [LanguageSource], bytes: Int, dir: String) throws -> [PublicShard] {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var perLanguage: [[PublicShard]] = []
    for s in sources {
      guard let data = FileManager.default.contents(atPath: s.train) else { throw DataError.unreadable(s.train, "cannot read the public corpus") }
      let text = [UInt8](data)
      var pieces: [Range<Int>] = []
      var start = 0
      while start < text.count {
        var end = min(text.count, start + bytes)
        if end < text.count, let nl = text[end...].firstIndex(of: 0x0A) { end = nl + 1 } else { end = text.count }
        pieces.append(start..<end)
        start = end
      }
      if pieces.count >= 2, pieces.last!.count < bytes / 4 {
        let last = pieces.removeLast()
        pieces[pieces.count - 1] = pieces.last!.lowerBound..<last.upperBound
      }
      var shards: [PublicShard] = []
      for (i, r) in pieces.enumerated() where !r.isEmpty {
        let blob = Array("\(prefix)\(s.name) \(i)\n".utf8) + text[r]
        let hash = Sodium.blake2b(blob)
        let path = (dir as NSString).appendingPathComponent(hex(hash))
        if !FileManager.default.fileExists(atPath: path) { try AtomicFile.write(Data(blob), to: path) }
        shards.append(PublicShard(language: s.name, index: i, hash: hash, path: path, textBytes: r.count))
      }
      perLanguage.append(shards)
    }
    var out: [PublicShard] = []
    for k in 0..<(perLanguage.map(\.count).max() ?? 0) {
      for l in perLanguage where k < l.count { out.append(l[k]) }
    }
    return out
  }

  /// Splits a fetched shard into its language, index and text; refuses anything else.
  public static func parse(_ blob: [UInt8]) throws -> (language: String, index: Int, text: ArraySlice<UInt8>) {
    guard let nl = blob.prefix(128).firstIndex(of: 0x0A) else { throw ShardError.malformed("no header line") }
    let header = String(decoding: blob[..<nl], as: UTF8.self)
    guard header.hasPrefix(prefix) else { throw ShardError.malformed("header \"\(header.prefix(40))\" is not \(prefix)…") }
    let parts = header.dropFirst(prefix.count).split(separator: " ", omittingEmptySubsequences: false)
    guard parts.count == 2, let index = Int(parts[1]), index >= 0 else { throw ShardError.malformed("header \"\(header)\"") }
    let lang = String(parts[0])
    guard (1...16).contains(lang.utf8.count), lang.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D || ($0 >= 0x30 && $0 <= 0x39) }) else {
      throw ShardError.malformed("language \"\(lang)\" is not a language code")
    }
    let text = blob[(nl + 1)...]
    guard !text.isEmpty else { throw ShardError.malformed("no text") }
    return (lang, index, text)
  }
}
