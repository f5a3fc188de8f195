import AgoraDashboard
import AgoraRegistry
import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

struct StatusCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "status", abstract: "Print a running coordinator's overview (from its dashboard's JSON API).")
  @Option(help: "The dashboard's URL, e.g. http://127.0.0.1:47180/")
  var coordinator: String = "http://127.0.0.1:47180/"
  @Option(help: "The dashboard's access token, if it has one.")
  var token: String?

  func fetch<T: Decodable>(_ path: String, as: T.Type) throws -> T {
    guard let base = URL(string: coordinator.hasSuffix("/") ? coordinator : coordinator + "/"), let url = URL(string: path, relativeTo: base) else {
      throw CLIError("\(coordinator) is not a URL")
    }
    var req = URLRequest(url: url, timeoutInterval: 5)
    if let token { req.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var result: Result<Data, Error> = .failure(CLIError("no answer from \(url)"))
    URLSession.shared.dataTask(with: req) { data, response, error in
      if let error { result = .failure(CLIError("\(url): \(error.localizedDescription)")) }
      else if let http = response as? HTTPURLResponse, http.statusCode != 200 { result = .failure(CLIError("\(url): HTTP \(http.statusCode)")) }
      else { result = .success(data ?? Data()) }
      done.signal()
    }.resume()
    done.wait()
    return try JSONDecoder().decode(T.self, from: try result.get())
  }

  func run() throws {
    let o = try fetch("api/v1/overview", as: Overview.self)
    let nodes = try fetch("api/v1/nodes", as: [NodeRow].self)
    let l = o.live
    print("federation \(l.federation): version \(l.version), \(o.rounds) rounds recorded, \(l.nodes.count) nodes connected")
    if let r = l.round {
      let left = l.deadline.map { max(0, Int($0 - Date().timeIntervalSince1970)) } ?? 0
      let filled = l.expected > 0 ? 30 * l.received / l.expected : 0
      print("round \(r): [" + String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled) + "] \(l.received)/\(l.expected) updates, \(left) s to the deadline")
    } else {
      print("no round in progress")
    }
    print("\nnode                                 | role        | status    | rounds | missed | tokens     | CPU-s")
    for n in nodes {
      print(pad2(n.name, 36) + " | " + pad2(n.role.rawValue, 11) + " | " + pad2(n.connected ? "connected" : n.status.rawValue, 9)
            + String(format: " | %6d | %6d | %10d | %5.0f", n.roundsJoined, n.roundsMissed, n.tokens, n.cpuSeconds))
    }
    print("\nversion | round | mean bits/byte | hash")
    for v in o.versions {
      print(String(format: "%7d | %5d | ", v.number, v.round) + pad(v.meanBitsPerByte.map { String(format: "%.3f", $0) } ?? "-", 14) + " | " + String(v.hash.prefix(16)))
    }
  }
}

/// Left-aligns `s` in `width` columns.
func pad2(_ s: String, _ width: Int) -> String { s.count >= width ? String(s.prefix(width)) : s + String(repeating: " ", count: width - s.count) }
