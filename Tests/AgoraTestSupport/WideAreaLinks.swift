import Foundation

/// Network namespaces joined by `agora link-emulator` (wide-area links: rate, delay, loss), for tests that run a
/// federation across slow, lossy links. One namespace per party, `PREFIX-NAME`, whose interface `eth0` has the
/// link's address (/24). Needs root, iproute2 and /dev/net/tun; `close()` removes everything it made.
public final class WideAreaLinks {
  public static let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }
  /// Root, iproute2, /dev/net/tun: what the links need.
  public static var available: Bool { getuid() == 0 && ip != nil && FileManager.default.fileExists(atPath: "/dev/net/tun") }

  public let prefix: String
  public let names: [String]
  /// While this file exists, the links it names are cut (`link-emulator --outage-file`).
  public let outageFile: String
  let emulator: Process
  let log: String

  /// `links`: `NAME=ADDRESS,RATE,RTT_MS,LOSS_PERCENT` as `agora link-emulator --link` takes them.
  public init(prefix: String, links: [String], dir: String) throws {
    self.prefix = prefix
    names = links.map { String($0.split(separator: "=")[0]) }
    outageFile = dir + "/outage"
    log = dir + "/link-emulator.log"
    let ready = dir + "/interfaces"
    let p = Process()
    p.executableURL = URL(fileURLWithPath: agoraBinary)
    p.arguments = ["link-emulator", "--prefix", prefix, "--ready", ready, "--outage-file", outageFile, "--seconds", "900"] + links.flatMap { ["--link", $0] }
    FileManager.default.createFile(atPath: log, contents: nil)
    let h = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    p.standardOutput = h
    p.standardError = h
    try p.run()
    emulator = p
    waitUntil(10, every: 0.05) { !p.isRunning || FileManager.default.fileExists(atPath: ready) }
    guard let text = try? String(contentsOfFile: ready, encoding: .utf8) else {
      p.terminate()
      throw WideAreaError.setup("the link emulator did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
    }
    let interfaces = text.split(separator: "\n").map(String.init)
    do {
      for (k, (name, link)) in zip(names, links).enumerated() {
        let address = String(link.split(separator: "=")[1].split(separator: ",")[0])
        let ns = namespace(name)
        try Self.ip(["netns", "add", ns])
        try Self.ip(["-n", ns, "link", "set", "lo", "up"])
        try Self.ip(["link", "set", interfaces[k], "netns", ns])
        try Self.ip(["-n", ns, "link", "set", interfaces[k], "name", "eth0"])
        try Self.ip(["-n", ns, "addr", "add", address + "/24", "dev", "eth0"])
        try Self.ip(["-n", ns, "link", "set", "eth0", "up"])
      }
    } catch {
      close()
      throw error
    }
  }

  public func namespace(_ name: String) -> String { prefix + "-" + name }

  /// What the emulator printed (its per-link counters once closed).
  public var report: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

  /// Cuts the links of `names` (every packet dropped) until `restore()`.
  public func cut(_ names: [String]) throws { try (names.joined(separator: "\n") + "\n").write(toFile: outageFile, atomically: true, encoding: .utf8) }
  public func restore() { try? FileManager.default.removeItem(atPath: outageFile) }

  /// Kills what still runs in the namespaces, removes them and stops the emulator (it prints its counters).
  public func close() {
    for name in names {
      let ns = namespace(name)
      if let pids = try? Self.output(["netns", "pids", ns]) {
        for pid in pids.split(whereSeparator: \.isWhitespace).compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
      }
      try? Self.ip(["netns", "del", ns])
    }
    if emulator.isRunning {
      emulator.terminate()
      waitUntil(5, every: 0.05) { !emulator.isRunning }
      if emulator.isRunning { kill(emulator.processIdentifier, SIGKILL) }
    }
  }

  static func ip(_ args: [String]) throws { _ = try output(args) }

  static func output(_ args: [String]) throws -> String {
    guard let ip else { throw WideAreaError.setup("no iproute2") }
    let (status, out) = try runProcess(ip, args)
    guard status == 0 else { throw WideAreaError.setup("ip \(args.joined(separator: " ")): \(out)") }
    return out
  }
}

public enum WideAreaError: Error, CustomStringConvertible {
  case setup(String)
  public var description: String { if case .setup(let s) = self { return "wide-area links: \(s)" }; return "" }
}
