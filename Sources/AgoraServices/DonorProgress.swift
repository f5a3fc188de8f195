import AgoraNode
import AgoraText
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Several observers of one node, told in order.
public final class NodeObservers: NodeObserver, @unchecked Sendable {
  let all: [NodeObserver]
  public init(_ all: [NodeObserver]) { self.all = all }
  public func node(_ event: NodeEvent) { for o in all { o.node(event) } }
}

/// A compute donor's progress line (`agora donate`): after each update it sent, what it has given so far — rounds,
/// steps, tokens (as its updates claimed them), CPU-seconds of this process — and, where the federation's dashboard
/// answers without a token, its rank among the federation's contributors by tokens.
public final class DonorProgress: NodeObserver, @unchecked Sendable {
  let fingerprint: String
  let dashboard: String?
  let print: @Sendable (String) -> Void
  private let lock = NSLock()
  private var rounds = 0, steps = 0, tokens = 0

  public init(fingerprint: String, dashboard: String?, print: @escaping @Sendable (String) -> Void) {
    self.fingerprint = fingerprint
    self.dashboard = dashboard
    self.print = print
  }

  public func node(_ event: NodeEvent) {
    switch event {
    case .updateSent(let round, _, let s, let t, _):
      lock.lock(); rounds += 1; steps += s; tokens += t; let (r, st, tk) = (rounds, steps, tokens); lock.unlock()
      print(String(format: "donated: round %llu sent; %d round%@, %d steps, %d tokens, %.0f CPU-seconds", round, r, r == 1 ? "" : "s", st, tk,
                   DonorProgress.cpuSeconds()) + (rank().map { "; rank \($0.rank) of \($0.of) contributors by tokens" } ?? ""))
    case .updateRefused(let round, let code, let reason):
      print("donated: round \(round): the coordinator refused the update (ERROR \(code)): \(Printable.line(reason))")
    case .refused(let reason):
      print("donated: the coordinator refused this donor: \(Printable.line(reason))")
    default: break
    }
  }

  /// User and system CPU time of this process.
  static func cpuSeconds() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
  }

  /// This donor's place in the dashboard's list of nodes (sorted by tokens), if the dashboard answers in 2 s.
  func rank() -> (rank: Int, of: Int)? {
    guard let dashboard, let url = URL(string: dashboard + "/api/v1/nodes") else { return nil }
    var request = URLRequest(url: url)
    request.timeoutInterval = 2
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var body: Data?
    URLSession.shared.dataTask(with: request) { d, r, _ in
      if (r as? HTTPURLResponse)?.statusCode == 200 { body = d }
      done.signal()
    }.resume()
    guard done.wait(timeout: .now() + 3) == .success, let body,
          let rows = try? JSONSerialization.jsonObject(with: body) as? [[String: Any]] else { return nil }
    let contributors = rows.filter { ($0["tokens"] as? Int ?? 0) > 0 }
    guard let i = contributors.firstIndex(where: { $0["fingerprint"] as? String == fingerprint }) else { return nil }
    return (i + 1, contributors.count)
  }
}
