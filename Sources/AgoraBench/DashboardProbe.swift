import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Times the coordinator's dashboard while rounds run: one request at a time, in turn to the page and the API
/// a monitor polls, every 0.2 s while started. An answer other than 200, or none within 5 s, counts as failed.
final class DashboardProbe: @unchecked Sendable {
  static let paths = ["/", "/api/v1/overview", "/api/v1/nodes", "/api/v1/rounds", "/api/v1/versions", "/metrics"]
  private let lock = NSLock()
  private var running = false, finished = false
  private var _times: [Double] = []
  private var _failures = 0
  private var _slowest = (0.0, "")
  private let thread: Thread

  init(port: Int) {
    let base = "http://127.0.0.1:\(port)"
    var thread: Thread! = nil
    let box = Unowned()
    thread = Thread {
      var i = 0
      let session = URLSession(configuration: .ephemeral)
      while let probe = box.probe, !probe.isFinished {
        guard probe.isRunning else { Thread.sleep(forTimeInterval: 0.05); continue }
        let path = DashboardProbe.paths[i % DashboardProbe.paths.count]
        i += 1
        var request = URLRequest(url: URL(string: base + path)!)
        request.timeoutInterval = 5
        let done = DispatchSemaphore(value: 0)
        let ok = Flag()
        let t0 = DispatchTime.now().uptimeNanoseconds
        session.dataTask(with: request) { d, r, _ in
          if (r as? HTTPURLResponse)?.statusCode == 200 && d != nil { ok.set() }
          done.signal()
        }.resume()
        let answered = done.wait(timeout: .now() + 6) == .success
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        probe.record(answered && ok.isSet ? seconds : nil, path: path)
        Thread.sleep(forTimeInterval: 0.2)
      }
    }
    self.thread = thread
    box.probe = self
    thread.start()
  }

  private final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
  }

  private final class Unowned: @unchecked Sendable { weak var probe: DashboardProbe? }

  var isRunning: Bool { lock.lock(); defer { lock.unlock() }; return running }
  var isFinished: Bool { lock.lock(); defer { lock.unlock() }; return finished }
  func start() { lock.lock(); running = true; lock.unlock() }
  func pause() { lock.lock(); running = false; lock.unlock() }
  func stop() { lock.lock(); finished = true; running = false; lock.unlock() }

  func record(_ seconds: Double?, path: String) {
    lock.lock(); defer { lock.unlock() }
    guard running else { return }
    if let seconds {
      _times.append(seconds)
      if seconds > _slowest.0 { _slowest = (seconds, path) }
    } else {
      _failures += 1
    }
  }

  /// Seconds of each answered request.
  var times: [Double] { lock.lock(); defer { lock.unlock() }; return _times }
  var failures: Int { lock.lock(); defer { lock.unlock() }; return _failures }
  /// The path of the slowest answer.
  var slowest: String { lock.lock(); defer { lock.unlock() }; return _slowest.1 }
}
