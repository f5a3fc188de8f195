import Foundation

/// Programs run inside the network namespaces the links join (scripts/wan, scripts/bench-uploads).
public enum NamespaceError: Error, Equatable, CustomStringConvertible {
  case noIproute
  public var description: String { "network namespaces need iproute2's ip (apt-get install iproute2)" }
}

/// iproute2's `ip`, where distributions put it (nil when it is not installed).
private let iprouteBinary = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }

/// iproute2's `ip`, or the error that says how to install it.
public func iproute() throws -> String {
  guard let ip = iprouteBinary else { throw NamespaceError.noIproute }
  return ip
}

extension Process {
  /// Sets the command to `exe ARGS` (not started: `run()` does that), inside network namespace `namespace` when one
  /// is given (`ip netns exec`, which replaces itself with the program: the child's pid, and a SIGTERM sent to it,
  /// are the program's).
  public func setCommand(_ exe: URL, _ args: [String], inNamespace namespace: String?) throws {
    if let namespace {
      executableURL = URL(fileURLWithPath: try iproute())
      arguments = ["netns", "exec", namespace, exe.path] + args
    } else {
      executableURL = exe
      arguments = args
    }
  }
}
