import Foundation
import Prometheus

/// The coordinator's Prometheus metrics (swift-prometheus), served as text at `/metrics`.
public final class FederationMetrics: @unchecked Sendable {
  public let registry = PrometheusCollectorRegistry()
  public let roundDuration: DurationHistogram
  public let rounds: Counter
  public let updatesReceived: Counter
  public let updatesRejected: Counter
  public let bytesIn: Counter
  public let nodesConnected: Gauge
  public let latestVersion: Gauge

  public init() {
    roundDuration = registry.makeDurationHistogram(
      name: "agora_round_duration_seconds", buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600].map { .milliseconds(Int64($0 * 1000)) },
      help: "Seconds from a round's announcement to its outcome")
    rounds = registry.makeCounter(name: "agora_rounds_total", help: "Rounds held")
    updatesReceived = registry.makeCounter(name: "agora_updates_received_total", help: "Updates verified and folded into a round")
    updatesRejected = registry.makeCounter(name: "agora_updates_rejected_total", help: "Updates refused (bad envelope, non-finite or outlying values, wrong round)")
    bytesIn = registry.makeCounter(name: "agora_update_bytes_total", help: "Bytes of accepted update payloads")
    nodesConnected = registry.makeGauge(name: "agora_nodes_connected", help: "Nodes with a live session")
    latestVersion = registry.makeGauge(name: "agora_latest_version", help: "Number of the latest version")
  }

  public func text() -> String { registry.emitToString() }
}
