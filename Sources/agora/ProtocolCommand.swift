import AgoraCrypto
import AgoraDigest
import AgoraRounds
import AgoraSecureAggregation
import AgoraModel
import AgoraStorage
import AgoraWire
import ArgumentParser
import Foundation

struct ProtocolCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "protocol", abstract: "Wire protocol tools.", subcommands: [Vectors.self, Digest.self])

  struct Vectors: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write the protocol test vectors (messages, envelope, malformed messages, version statement, payloads).")

    @Option(help: "Output directory.")
    var out: String = "Protocol/vectors"

    func run() throws {
      try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
      try AtomicFile.write(Data(ProtocolVectors.messagesJSON().utf8), to: out + "/messages.json")
      try AtomicFile.write(Data(try ProtocolVectors.envelopeJSON().utf8), to: out + "/envelope.json")
      try AtomicFile.write(Data(ProtocolVectors.malformedJSON().utf8), to: out + "/malformed.json")
      try AtomicFile.write(Data(try ProtocolVectors.statementJSON().utf8), to: out + "/statement.json")
      try AtomicFile.write(Data(try FederationVectors.payloadsJSON().utf8), to: out + "/payloads.json")
      try AtomicFile.write(Data(try SecureAggregationVectors.json().utf8), to: out + "/secagg.json")
      try AtomicFile.write(Data(try AdapterVectors.json().utf8), to: out + "/adapter.json")
      print("wrote \(out)/messages.json, envelope.json, malformed.json, statement.json, payloads.json, secagg.json and adapter.json")
    }
  }

  struct Digest: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Print the BLAKE3 hash of files as b3sum does: the envelope's payload digest of an update payload (SPEC §6).")
    @Argument(help: "Files to hash.")
    var files: [String]
    @Option(name: .customLong("piece-kib"), help: "Feed the hasher pieces of this many KiB.")
    var pieceKiB: Int = 1024
    @Option(help: "BLAKE3 kernel: avx512, avx2 or portable (default: the fastest this CPU runs).")
    var kernel: String?

    func run() throws {
      guard pieceKiB > 0 else { throw CLIError("--piece-kib must be positive") }
      let k = try kernel.map { name in
        guard let k = Blake3.Kernel(rawValue: name) else { throw CLIError("--kernel takes avx512, avx2 or portable") }
        guard Blake3.runs(k) else { throw CLIError("this CPU cannot run the \(name) kernel") }
        return k
      } ?? Blake3.best
      for path in files {
        guard let h = FileHandle(forReadingAtPath: path) else { throw CLIError("cannot open \(path)") }
        defer { try? h.close() }
        let hasher = Blake3Hasher(kernel: k)
        while let d = try h.read(upToCount: pieceKiB << 10), !d.isEmpty { d.withUnsafeBytes { hasher.update($0) } }
        print("\(hex(hasher.finish()))  \(path)")
      }
    }
  }
}
