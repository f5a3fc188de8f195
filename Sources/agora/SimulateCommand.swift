import AgoraRounds
import AgoraSimulation
import ArgumentParser
import Foundation

struct SimulateCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "simulate",
    abstract: "Simulate a federation in one process (the nodes' training and the outer step, no transport) to compare recipes quickly.")

  @Option(help: "A directory like Nodes/demo: federation.toml and one TOML file per node.")
  var nodes: String
  @Option(help: "Evaluate every this many rounds (and after the last).")
  var evalEvery: Int = 1
  @Flag(help: "Also score each node's own model after its inner steps (on its own languages and on all).")
  var localEval = false
  @Flag(help: "Score each node's own model after the last round only (what an institution holds if it keeps its last local model).")
  var localEvalLast = false
  @Option(help: "α of averaging by the nodes' second moments outside the embedding, in place of rounds.moment_weighting (0: off).")
  var momentWeighting: Float? = nil
  @Option(help: "Experimental, with --moment-weighting: average the second moment over blocks of this many values (1: per value) instead of the network's 256-value blocks, normalisation and cap.")
  var momentBlock: Int? = nil
  @Flag(help: "With --moment-weighting: scale each node's block factors to mean 1, so they move its weight between blocks and cannot raise it.")
  var momentNormalise = false

  func run() throws {
    setvbuf(stdout, nil, _IOLBF, 0)
    let files = try DemoSetup.nodeConfigFiles(in: nodes).map { nodes + "/" + $0 }
    let configs: [NodeConfig]
    do {
      // Keys and tokenizer as `agora demo` makes them (the nodes' seeds come from their identities).
      try DemoSetup.prepare(federation: nodes + "/federation.toml", nodeConfigs: files)
      configs = try files.map { try NodeConfig(path: $0) }
    } catch let e as ConfigError { throw CLIError(e.description) }
    var recipe = FederationSimulation.Recipe()
    recipe.evaluateLocal = localEval
    recipe.momentWeighting = momentWeighting
    recipe.momentBlock = momentBlock
    recipe.momentNormalise = momentNormalise
    let sim = try FederationSimulation(nodeConfigs: configs, recipe: recipe)
    let fed = sim.federation
    print("simulated federation \(fed.id): \(sim.nodes.count) nodes (\(sim.nodes.map(\.name).joined(separator: ", "))), \(fed.rounds) rounds, \(fed.outerOptimizer.rawValue), \(fed.compression.rawValue) updates")
    let v0 = try sim.evaluate()
    func mean(_ b: [(String, Double)]) -> Double { b.isEmpty ? .nan : b.map(\.1).reduce(0, +) / Double(b.count) }
    print(String(format: "round 0: mean bits/byte %.4f", mean(v0)))
    var last = v0
    let t0 = Date()
    for r in 1...fed.rounds {
      if localEvalLast { sim.recipe.evaluateLocal = r == fed.rounds }
      let losses = try sim.round(r)
      let meanLoss = losses.reduce(0, +) / Float(max(1, losses.count))
      for line in sim.factorSummaries { print("  " + line) }
      for l in sim.local { print(String(format: "  %@ alone after round %d: %.4f on its languages, %.4f on all", l.node, r, l.own, l.all)) }
      if r % evalEvery == 0 || r == fed.rounds {
        last = try sim.evaluate()
        print(String(format: "round %d: node loss %.3f, mean bits/byte %.4f (%.0f s)", r, meanLoss, mean(last), Date().timeIntervalSince(t0)))
      } else {
        print(String(format: "round %d: node loss %.3f (%.0f s)", r, meanLoss, Date().timeIntervalSince(t0)))
      }
    }
    let after = Dictionary(uniqueKeysWithValues: last)
    print("bits per byte per language, version 0 → round \(fed.rounds):")
    for (l, b) in v0 { print(String(format: "  %@  %.3f → %.3f", l, b, after[l] ?? .nan)) }
  }
}
