import AgoraLinkEmulator
import AgoraStorage
import AgoraTransport
import ArgumentParser
import Foundation

/// `agora link-emulator`: wide-area links between network namespaces in user space (scripts/wan and the
/// wide-area tests start it; needs root for /dev/net/tun).
struct LinkEmulatorCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "link-emulator",
    abstract: "Emulate wide-area links (rate, delay, loss) between parties on TUN interfaces, for scripts/wan.",
    discussion: """
      Creates one TUN interface per --link (PREFIX0, PREFIX1, …) and forwards IPv4 packets between them: each \
      packet crosses the sender's link and then the receiver's, each with its rate, half its round-trip time and \
      its loss. Move each interface into its party's network namespace and give it the link's address (/24); \
      scripts/wan does. Stops on SIGINT or SIGTERM, or after --seconds, and prints what crossed each link.
      """)

  @Option(name: .customLong("link"), help: ArgumentHelp("A party's link: NAME=ADDRESS,RATE,RTT_MS,LOSS_PERCENT (RATE like 100mbit, or none); repeatable.", valueName: "spec"))
  var links: [String]

  @Option(help: "Interface name prefix (at most 13 characters).")
  var prefix = "agwan"

  @Option(help: "Seed of the loss draws.")
  var seed: UInt64 = 1

  @Option(help: "Stop after this many seconds at the latest.")
  var seconds: Double = 3600

  @Option(help: "While this file exists, the links it names (one per line) are cut (every packet dropped), as in an outage.")
  var outageFile: String?

  @Option(help: "A file to write the interface names to (one per line, in --link order) once they exist.")
  var ready: String?

  func run() throws {
    setvbuf(stdout, nil, _IOLBF, 0)
    let parsed: [LinkEmulator.Link]
    do { parsed = try links.map(LinkEmulator.Link.init(parsing:)) } catch { throw CLIError("\(error)") }
    let emulator: LinkEmulator
    do { emulator = try LinkEmulator(links: parsed, interfacePrefix: prefix, seed: seed) } catch { throw CLIError("\(error)") }
    for (l, name) in zip(parsed, emulator.interfaces) {
      print("link-emulator: \(name) \(l.name): \(l.rate.map { String(format: "%.0f Mbit/s", $0 / 1e6) } ?? "no rate limit"), RTT \(Int((l.delay * 2000).rounded())) ms, loss \(l.loss * 100)% each way")
    }
    emulator.outageFile = outageFile
    if let ready { try AtomicFile.write(Data((emulator.interfaces.joined(separator: "\n") + "\n").utf8), to: ready) }
    let stop = ManagedAtomicFlag()
    let signals = onTerminationSignal { stop.set() }
    defer { _ = signals }
    let end = Date(timeIntervalSinceNow: seconds)
    emulator.run { stop.isSet || Date() > end }
    for (l, c) in zip(parsed, emulator.stats) {
      print("link-emulator: \(l.name): up \(c.upPackets) packets \(c.upBytes) B, down \(c.downPackets) packets \(c.downBytes) B, lost \(c.lost), queue drops \(c.queueDrops), cut \(c.cut), unroutable \(c.unroutable)")
    }
  }
}
