import Foundation

/// What a benchmark's failure says (bad arguments, a run that did not finish).
public struct BenchError: Error, CustomStringConvertible {
  public let description: String
  public init(_ s: String) { description = s }
}

/// The median of `xs` (nan when empty): benchmarks report medians.
public func median(_ xs: [Double]) -> Double {
  let s = xs.sorted()
  return s.isEmpty ? .nan : (s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2)
}

/// Peak resident memory of this process in MiB.
public func peakRSSMiB() -> Double {
  var u = rusage()
  getrusage(RUSAGE_SELF.rawValue, &u)
  return Double(u.ru_maxrss) / 1024
}

/// User + system CPU seconds of `who` (RUSAGE_SELF, RUSAGE_CHILDREN) so far.
public func cpuSeconds(_ who: Int32) -> Double {
  var u = rusage()
  getrusage(__rusage_who_t(who), &u)
  return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
}
