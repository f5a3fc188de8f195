import AgoraRounds
import AgoraCluster
import AgoraData
import AgoraModel
import AgoraTensor
import AgoraTrainer
import Foundation

/// A node spanning an MPI cluster (`mpirun -np K agora node --config x.toml`): the K ranks train each round's
/// inner steps synchronously data-parallel — every step's batch of the federation's size split into K equal
/// parts, the gradients summed with `MPI_Allreduce` — and only rank 0 (the leader, a `NodeService`) speaks to
/// the coordinator. The federation sees one node. Rank 0 leads with broadcasts: a round's start (its seed,
/// whether it is the node's first, and θ), each step, the round's end, and the end of the run.
enum ClusterCommand: Int32 {
  case exit = 0, round = 1, step = 2, roundOver = 3, forgetMoments = 4
}

extension Cluster {
  /// How a rank trains: the federation's batch split into `size` equal parts, gradients summed over the ranks.
  func attach(_ trainer: Trainer) {
    trainer.part = (rank, size)
    trainer.reduceGradients = { [self] grads, loss in
      try allreduceSum(grads)
      var l = [Double(loss)]
      try allreduceSum(&l)
      loss = Float(l[0])
    }
  }

  /// The batch each rank trains on: the federation's, divided by the ranks.
  static func rankBatch(_ fed: FederationConfig, ranks: Int, file: String) throws -> Int {
    guard fed.batch % ranks == 0 else {
      throw ConfigError(file: file, key: "rounds.batch", problem: "a node of \(ranks) MPI ranks splits each batch in \(ranks) equal parts; \(fed.batch) does not divide")
    }
    return fed.batch / ranks
  }

  /// Rank 0: a command to the others (collective: every rank waits for it).
  func send(_ command: ClusterCommand, _ args: [Int32] = []) throws {
    var m = [command.rawValue, 0, 0, 0]
    for (i, a) in args.prefix(3).enumerated() { m[i + 1] = a }
    try broadcast(&m)
  }
}

/// Ranks 1 … K−1 of a cluster node: they follow rank 0's commands and train their part of each step.
public final class ClusterFollower {
  let config: NodeConfig
  let cluster: Cluster
  var trainer: Trainer?
  public var log: (String) -> Void = { print($0) }

  public init(config: NodeConfig, cluster: Cluster) throws {
    guard !cluster.isLeader else { throw ClusterError.config("rank 0 runs the node itself") }
    guard !config.donor else { throw ConfigError(file: config.path, key: "node.donor", problem: "a compute donor runs as one process, not under mpirun") }
    self.config = config
    self.cluster = cluster
  }

  /// Follows rank 0 until it says the run is over.
  public func run() throws {
    let fed = config.federation
    if let t = config.threads { Parallel.threads = t }
    while true {
      var m = [Int32](repeating: 0, count: 4)
      try cluster.broadcast(&m)
      switch ClusterCommand(rawValue: m[0]) {
      case .exit?:
        log("\(config.name) rank \(cluster.rank): done (\(cluster.allreduces) all-reduces, \(String(format: "%.1f", cluster.allreduceSeconds)) s in them)")
        return
      case .round?:
        if trainer == nil {
          // Read at the first round: by then rank 0 has the federation's tokenizer (a federated vocabulary is
          // learned before it). Every rank reads the node's data; each step draws rows of the same batches,
          // each row on one rank only.
          let tokenizer = try Tokenizer(contentsOf: fed.tokenizer)
          let corpus = try TokenizedCorpus(sources: try LanguageSource.discover(config.data), tokenizer: tokenizer, tokenizerPath: fed.tokenizer,
                                           cacheDir: config.workDir + "/cache-rank\(cluster.rank)")
          var s = fed.trainSettings
          s.model = try fed.modelConfig(tokenizer: tokenizer)
          s.batch = try Cluster.rankBatch(fed, ranks: cluster.size, file: fed.path)
          s.seed = UInt64(UInt32(bitPattern: m[1])) | UInt64(UInt32(bitPattern: m[2])) << 32
          s.precision = config.precision
          let t = try Trainer(settings: s, tokenizer: tokenizer, corpus: corpus)
          if fed.restrictedSoftmax { t.restrictSoftmaxToCorpus() }
          cluster.attach(t)
          trainer = t
        }
        let t = trainer!
        let base = FloatBuffer(count: t.model.parameters.count)
        try cluster.broadcast(base.buffer)
        fed.beginRound(t, at: base, keepMoments: m[3] != 0)
      case .step?:
        guard let t = trainer else { throw ClusterError.config("rank 0 asked for a step before a round") }
        _ = try t.step()
      case .roundOver?:
        continue
      case .forgetMoments?:
        // The next round's first steps start before it is announced (rounds.overlap_steps).
        guard let t = trainer else { throw ClusterError.config("rank 0 began a round's steps before a round") }
        fed.forgetMoments(t)
      case nil:
        throw ClusterError.config("unknown command \(m[0]) from rank 0")
      }
    }
  }
}
