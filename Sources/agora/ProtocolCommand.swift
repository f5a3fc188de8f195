import AgoraCrypto
import AgoraModel
import ArgumentParser
import Foundation

struct ProtocolCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "protocol", abstract: "Wire protocol tools.", subcommands: [Vectors.self])

  struct Vectors: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write the protocol test vectors (messages.json, envelope.json).")

    @Option(help: "Output directory.")
    var out: String = "Protocol/vectors"

    func run() throws {
      try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
      try AtomicFile.write(Data(ProtocolVectors.messagesJSON().utf8), to: out + "/messages.json")
      try AtomicFile.write(Data(try ProtocolVectors.envelopeJSON().utf8), to: out + "/envelope.json")
      print("wrote \(out)/messages.json and \(out)/envelope.json")
    }
  }
}
