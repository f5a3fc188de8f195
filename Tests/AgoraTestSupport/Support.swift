import AgoraData
import AgoraTransport
import Foundation

/// The repository's root (tests read its Package.swift, scripts and demo corpus) and the release build's tool.
public let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
public let agoraBinary = repoRoot + "/.build/release/agora"

/// Waits until `condition` holds, checking it every `interval` seconds, for at most `seconds`: whether it came
/// to hold. The tests' one way to wait for something another thread or process does (a log line, a file, a
/// counter): a bounded wait on the event, never a fixed sleep standing in for it.
@discardableResult
public func waitUntil(_ seconds: Double, every interval: Double = 0.02, _ condition: () -> Bool) -> Bool {
  let end = Date(timeIntervalSinceNow: seconds)
  let tick = NSCondition()
  tick.lock(); defer { tick.unlock() }
  while !condition() {
    guard Date() < end else { return false }
    _ = tick.wait(until: min(end, Date(timeIntervalSinceNow: interval)))
  }
  return true
}

/// A TCP port free on 127.0.0.1 now: bound to 0, read, released.
public func freeLocalPort() -> Int {
  let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  defer { close(probe) }
  var addr = sockaddr_in()
  addr.sin_family = sa_family_t(AF_INET)
  addr.sin_addr.s_addr = inet_addr("127.0.0.1")
  var len = socklen_t(MemoryLayout<sockaddr_in>.size)
  _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, len); return getsockname(probe, $0, &len) } }
  return Int(UInt16(bigEndian: addr.sin_port))
}

/// A new empty directory under the system's temporary directory (the caller removes it).
public func temporaryDirectory(_ prefix: String = "agora-test") throws -> String {
  let dir = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString)"
  try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  return dir
}

/// Reads a server endpoint on a thread of its own and hands each inbound message to `handle`, as the
/// coordinator's pump does; `finish` stops it. The tests' coordinator stand-ins (session table, upload
/// receiver) are made of one.
public final class ServerLoop: @unchecked Sendable {
  private let lock = NSLock()
  private var server: Endpoint
  private let stop = ManagedAtomicFlag()
  private let done = DispatchSemaphore(value: 0)

  public init(server: Endpoint, handle: @escaping (Inbound, Endpoint) -> Void) {
    self.server = server
    Thread { [self] in
      while !stop.isSet {
        lock.lock(); let s = self.server; lock.unlock()
        if let m = s.receive(timeout: 0.05) { handle(m, s) }
      }
      done.signal()
    }.start()
  }

  /// Reads another endpoint from now on (a coordinator restarted on the same port).
  public func swapServer(_ s: Endpoint) { lock.lock(); server = s; lock.unlock() }
  public func finish() { stop.set(); done.wait() }
}

/// A slice of the embedded demo corpus (real manual-page text in several languages), copied to `dir` (a new
/// temporary directory by default): `bytes` of train and a quarter of that of validation text per language,
/// cut at a line end. Returns the directory.
@discardableResult
public func demoSlice(languages: [String] = ["de", "fr", "pl", "cs", "es"], bytes: Int = 60_000, into dir: String? = nil) throws -> String {
  let src = repoRoot + "/.agora/data/demo"
  guard FileManager.default.fileExists(atPath: src + "/de/train.txt") else {
    throw DataError.missingSource("the demo corpus is not built: run scripts/setup (or `agora data build-demo`)")
  }
  let dir = dir ?? NSTemporaryDirectory() + "agora-demo-\(UUID().uuidString)"
  for lang in languages {
    try FileManager.default.createDirectory(atPath: dir + "/" + lang, withIntermediateDirectories: true)
    for (split, n) in [("train", bytes), ("valid", bytes / 4)] {
      let d = try Data(contentsOf: URL(fileURLWithPath: "\(src)/\(lang)/\(split).txt"))
      let cut = d.prefix(n)
      let end = cut.lastIndex(of: 0x0A).map { $0 + 1 } ?? cut.count
      try d.prefix(end).write(to: URL(fileURLWithPath: "\(dir)/\(lang)/\(split).txt"))
    }
  }
  return dir
}

/// Runs `exe ARGS` to the end; returns (status, combined standard output and error).
public func runProcess(_ exe: String, _ args: [String], in directory: String? = nil) throws -> (Int32, String) {
  let p = Process()
  p.executableURL = URL(fileURLWithPath: exe)
  p.arguments = args
  if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
  let pipe = Pipe()
  p.standardOutput = pipe
  p.standardError = pipe
  try p.run()
  let out = pipe.fileHandleForReading.readDataToEndOfFile()
  p.waitUntilExit()
  return (p.terminationStatus, String(decoding: out, as: UTF8.self))
}

/// scripts/hf_lora.py's cross-check of a LoRA export: peft loads `adapter` onto `base` (grown for the adapter's
/// tokens) and runs `tokens`; `merged` runs them too. Returns the largest |peft − merged| logit difference and the
/// largest change the adapter makes to the base's logits (nil when the script printed no figures), and its output.
public func peftLogits(python: String, base: String, adapter: String, merged: String, tokens: [Int32], scratch: String) throws
  -> (peftVsMerged: Double?, adapterEffect: Double?, output: String) {
  let (status, out) = try runProcess(python, [repoRoot + "/scripts/hf_lora.py", "logits", base, adapter, scratch + "/logits.safetensors",
                                              "--tokens", tokens.map(String.init).joined(separator: ","), "--merged", merged])
  guard status == 0, let line = out.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
        let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else { return (nil, nil, out) }
  return (o["max_peft_vs_merged"] as? Double, o["max_adapter_effect"] as? Double, out)
}

/// Headless Chromium (installed by scripts/setup --python) at `url`, with `args` (e.g. `--dump-dom`,
/// `--screenshot=FILE`); its profile in `profile`, `virtualTime` ms of virtual time for the page's scripts.
/// Returns (standard output, standard error: the console lines with --enable-logging).
public func headlessChromium(_ url: String, _ args: [String], profile: String, virtualTime: Int = 6000) throws -> (String, String) {
  guard let browser = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
    throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "Chromium is missing: scripts/setup --python installs it"])
  }
  let p = Process()
  p.executableURL = URL(fileURLWithPath: browser)
  p.arguments = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0",
                 "--user-data-dir=" + profile, "--virtual-time-budget=\(virtualTime)", "--window-size=1200,1500"] + args + [url]
  let out = Pipe(), err = Pipe()
  p.standardOutput = out
  p.standardError = err
  try p.run()
  let o = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  p.waitUntilExit()
  return (o, e)
}
