import AgoraRounds
import AgoraCluster
import AgoraCrypto
import AgoraData
import AgoraModel
import AgoraSecureAggregation
import AgoraStorage
import AgoraTensor
import AgoraTrainer
import AgoraTransport
import AgoraWire
import Foundation

/// One round at a node (`NodeService.run` calls it for each ROUND): secure aggregation's key exchange, the base
/// version by patch or whole, the inner steps (led across the ranks of a cluster node), Δ encoded and sealed,
/// the upload, and the round's time by phase.
extension NodeService {
  /// The round's version, asked for again (after 1, 2, 4, 8 s, within the deadline) while the coordinator answers
  /// that it does not serve it: it repairs a version found corrupt on its disk and serves it again (SPEC §5).
  func syncRetrying(target: [UInt8], patch: ([UInt8], [UInt8]), deadline: Date, work: FloatBuffer) throws -> VersionCopy.Sync {
    var wait = 1.0
    while true {
      do {
        return try copy.sync(endpoint: endpoint, target: target, patchFrom: patch.0, patchHash: patch.1, work: work)
      } catch TransferError.rejected(let code, let text) where code == ErrorCode.unknownVersion.rawValue && wait <= 8
                                                            && Date(timeIntervalSinceNow: wait) < deadline && !stop.isSet {
        log("\(config.name): the coordinator does not serve version \(hex(target).prefix(12)) now (\(Printable.line(text))); asking again in \(Int(wait)) s")
        Thread.sleep(forTimeInterval: wait)
        wait *= 2
      }
    }
  }

  func runRound(round r: UInt64, version: UInt64, baseHash hash: [UInt8], patch: ([UInt8], [UInt8]), shard: [UInt8], steps: Int, modelBytes: Int, deadline: Date,
                chunk: Int, recipient: [UInt8], carried: CarriedSteps?) throws -> PendingUpload {
    let fed = config.federation
    let t0 = Date()
    observer?.node(.roundStarted(round: r, version: version))
    let base = copy.base
    guard modelBytes == base.count * 4 else { throw TransferError.protocolViolation("round announces \(modelBytes) model bytes, this node's model has \(base.count * 4)") }
    // Secure aggregation: keys, roster and shares before training (SPEC §7.2).
    let previousEnd = lastRoundEnd
    let waited = lastRoundEnd.map { t0.timeIntervalSince($0) - (carried?.seconds ?? 0) }
    let secureRound = try secure?.setup(round: r, deadline: deadline)
    if config.donor { _ = try takeShard(shard) }
    guard let trainer = training else { throw TransferError.protocolViolation("no data to train on") }
    let tFetch = Date()
    // Fetched already if the exchange thread saw the announcement while this node trained ahead.
    let early = prefetched.flatMap { $0.hash == hash && copy.hash == hash ? $0.sync : nil }
    prefetched = nil
    let sync = try early ?? syncRetrying(target: hash, patch: patch, deadline: deadline, work: trainer.trained)
    let fetched = sync.bytesFetched
    let tTrain = Date()
    // Steps trained while the last update uploaded (rounds.overlap_steps) began this round's moments already.
    let keepMoments = roundsDone == 0 || carried != nil
    fed.beginRound(trainer, at: base, keepMoments: keepMoments)
    if !config.donor && fed.nodeEvalWindows > 0 && version != lastEvaluated { try evaluate(version: version, hash: hash, training: trainer) }
    // Folded in: the new version plus what this node trained since it sent its update.
    if let carried { trainer.trained.add(carried.progress) }
    if let cluster, let trainer = self.trainer {
      // The other ranks go on from the same θ, with the same batches (their rows of them).
      let seed = trainer.sampler.seed
      try cluster.send(.round, [Int32(bitPattern: UInt32(truncatingIfNeeded: seed)), Int32(bitPattern: UInt32(truncatingIfNeeded: seed >> 32)),
                                keepMoments ? 1 : 0])
      try cluster.broadcast(trainer.model.parameters.buffer)
    }
    let n = min(steps, config.maxStepsPerRound ?? steps)
    var loss: Float = carried?.loss ?? 0
    var done = min(carried?.steps ?? 0, n)
    let before = carried?.tokensBefore ?? trainer.tokensByLanguage
    let cpu0 = carried?.cpu0 ?? processCPUSeconds()
    let tokensPerStep = Double(trainer.globalBatch * trainer.model.T)
    let first = done
    // Rounds of time (rounds.inner_seconds): train until the cut-off, counted from hearing the round, with at
    // least one step; `steps` is then a cap.
    let cutoff = fed.innerSeconds > 0 ? t0.addingTimeInterval(fed.innerSeconds) : Date.distantFuture
    for _ in done..<n {
      if Date() > deadline || stop.isSet || (done >= 1 && Date() > cutoff) { break }
      if adversary == .vanish && r == 2 && done > first {
        log("\(config.name): round \(r): dying mid-training after the share exchange (AGORA_ADVERSARY)")
        kill(getpid(), SIGKILL)
      }
      try cluster?.send(.step)
      loss = try trainer.step().loss
      done += 1
      let rate = Double(done - first) / max(Date().timeIntervalSince(tTrain), 1e-9)
      progress(String(format: "%@ training, round %llu step %d/%d, loss %.3f, %.0f tok/s, ETA %.0f s", config.name, r, done, n, loss,
                      rate * tokensPerStep, Double(n - done) / max(rate, 1e-9)))
    }
    if isatty(STDOUT_FILENO) == 1 { print("") }
    try cluster?.send(.roundOver)
    let tEncode = Date()
    // Asked to stop (SIGINT/SIGTERM): the round is abandoned, nothing half-sent.
    guard !stop.isSet else { throw TransferError.timeout("stopping; round \(r) abandoned") }
    // Δ = θ_base − θ_local
    let delta = FloatBuffer(count: base.count)
    delta.store(base, minus: trainer.trained)
    let format = fed.compression.format
    if let a = adversary {
      a.corrupt(delta, seed: r ^ fnv1a(identity.card.fingerprint))
      if let attack { try attack.apply(to: delta, base: base, steps: done - first) }
      log("\(config.name): round \(r): sending a \(a.rawValue) update (AGORA_ADVERSARY)\(attack.map { " against \($0.target), \($0.strength)× its norm" } ?? "")")
    }
    let payload: [UInt8]
    if let secure, let secureRound {
      // Δ plus the error feedback, encoded in the ring; what is not carried becomes the new error feedback.
      let (d, e) = (delta.pointer, errorFeedback.pointer)
      for i in 0..<delta.count { d[i] += e[i] }
      let dp = fed.dpClip > 0
      if dp {
        // Differential privacy: clipped to C, plus this node's share of the round's noise, N(0, (z·C)²/n).
        var sq = 0.0
        for i in 0..<delta.count { sq += Double(d[i]) * Double(d[i]) }
        let scale = Float(min(1, fed.dpClip / max(sq.squareRoot(), 1e-30)))
        for i in 0..<delta.count { d[i] *= scale }
        try GaussianNoise.add(sigma: fed.dpNoiseMultiplier * fed.dpClip / Double(secureRound.encoding.participants).squareRoot(), to: delta.buffer,
                              threads: Parallel.threads)
      }
      payload = try secure.encode(delta.buffer, round: r, secure: secureRound, fraction: dp ? 1 : Float(done) / Float(max(steps, 1)),
                                  relative: dp ? nil : ownRelative, deadline: deadline)
      errorFeedback.copy(from: delta)
    } else {
      let update = DeltaCodec.encode(UnsafeBufferPointer(delta.buffer), format: format,
                                     errorFeedback: format.quantised && adversary == nil ? errorFeedback.buffer : nil)
      // Averaging by second moments: the AdamW second moment per block of 256 values follows Δ (SPEC §6.2).
      payload = fed.momentWeighting > 0 ? update + BlockMoments.trailer(UnsafeBufferPointer(trainer.optimizer.v.buffer)) : update
    }
    let sealedBase = adversary == .stalebase ? (previousBase ?? [UInt8](repeating: 0xAB, count: 32)) : hash
    previousBase = hash
    let sealer = try EnvelopeSealer(context: .init(federation: fed.id, round: r, baseHash: sealedBase, nodeID: identity.card.nodeID),
                                    payloadLength: UInt64(payload.count), chunkSize: chunk, recipient: recipient, signingSecretKey: identity.signSecret)
    var sender = UploadSender(endpoint: endpoint, transfer: r, round: r)
    sender.withholdEnd = adversary == .partial
    // A late update is still worth sending when the federation applies late updates (one round later).
    sender.deadline = fed.lateUpdates == .stale ? deadline.addingTimeInterval(fed.deadlineSeconds) : deadline
    sender.ackTimeout = 2
    sender.maxRetries = 1000  // bounded by the deadline
    sender.shouldStop = { [stop] in stop.isSet }
    let tokens = UInt64(done * trainer.globalBatch * trainer.model.T)
    var perLanguage: [String: UInt64] = [:]
    for (l, t) in trainer.tokensByLanguage where t > before[l] ?? 0 { perLanguage[l] = t - (before[l] ?? 0) }
    let cpuMillis = UInt64(max(0, processCPUSeconds() - cpu0) * 1000)
    let tSend = Date()
    roundsDone += 1
    let overlapping = fed.overlapSteps > 0 && !config.donor
    let send = { [self] in
      let res = try payload.withUnsafeBytes {
        try sender.send(sealer: sealer, tokens: tokens, steps: UInt32(done), loss: loss, cpuMillis: cpuMillis,
                        languages: LanguageTokens.canonical(perLanguage), payload: $0)
      }
      if adversary == .replay { replay(round: r, hash: hash, payload: payload, sender: sender, chunk: chunk, recipient: recipient, tokens: tokens,
                                       steps: done, loss: loss, cpuMillis: cpuMillis, languages: perLanguage) }
      let end = Date()
      observer?.node(.updateSent(round: r, bytes: res.bytesSent, steps: done, tokens: Int(tokens), masked: secureRound != nil))
      log(String(format: "%@: round %llu: %d steps, loss %.3f, fetched %d B%@, sent %d B (%@) in %.1f s", config.name, r, done, loss, fetched, sync.viaPatch ? " (patch)" : "",
                 res.bytesSent, secureRound.map { "masked, \($0.encoding.codec.bits)-bit ring" } ?? format.name, end.timeIntervalSince(t0)))
      // The round's time by phase (scripts/wan reads this line): key exchange, fetching the version, training (with
      // scoring the version), encoding, sending; the wait since the last round ended, less the steps of this round
      // trained meanwhile (overlap); and the wall time since the last round ended, without the upload when it runs
      // beside the next round's steps.
      let wall = (overlapping ? tSend : end).timeIntervalSince(previousEnd ?? t0)
      let phases = String(format: "setup %.3f s, fetch %.3f s, train %.3f s, encode %.3f s, send %.3f s", tFetch.timeIntervalSince(t0), tTrain.timeIntervalSince(tFetch),
                          tEncode.timeIntervalSince(tTrain), tSend.timeIntervalSince(tEncode), end.timeIntervalSince(tSend))
      let (aheadSeconds, aheadSteps): (Double, Int) = (carried?.seconds ?? 0, carried?.steps ?? 0)
      let rest = String(format: "overlap %.3f s (%d steps), wall %.3f s", aheadSeconds, aheadSteps, wall)
      log("\(config.name): round \(r) timing: \(phases), waited \(waited.map { String(format: "%.3f s", $0) } ?? "-"), \(rest)")
      if let secure, let secureRound { _ = try secure.reveal(round: r, party: secureRound.party, deadline: deadline.addingTimeInterval(fed.secureAggregationSetupSeconds)) }
    }
    return PendingUpload(round: r, handoff: tSend, overlapping: overlapping, send: send)
  }

  /// The same sealed update again under a new transfer id (AGORA_ADVERSARY=replay): the coordinator must refuse it.
  func replay(round r: UInt64, hash: [UInt8], payload: [UInt8], sender: UploadSender, chunk: Int, recipient: [UInt8], tokens: UInt64, steps: Int, loss: Float,
              cpuMillis: UInt64, languages: [String: UInt64]) {
    var again = UploadSender(endpoint: endpoint, transfer: r | (1 << 62), round: r)
    again.deadline = sender.deadline
    again.ackTimeout = 2
    do {
      let sealer = try EnvelopeSealer(context: .init(federation: config.federation.id, round: r, baseHash: hash, nodeID: identity.card.nodeID),
                                      payloadLength: UInt64(payload.count), chunkSize: chunk, recipient: recipient, signingSecretKey: identity.signSecret)
      _ = try payload.withUnsafeBytes { try again.send(sealer: sealer, tokens: tokens, steps: UInt32(steps), loss: loss, cpuMillis: cpuMillis,
                                                        languages: LanguageTokens.canonical(languages), payload: $0) }
      log("\(config.name): round \(r): the replay was accepted")
    } catch {
      log("\(config.name): round \(r): the replay was refused: \(error)")
    }
  }
}

/// A round's sealed update, ready to go: sent at once (`send` on the round loop's thread), or, with
/// `rounds.overlap_steps`, on a thread of its own while the node trains the next round's first steps.
struct PendingUpload {
  let round: UInt64
  /// When the node's own work on the round ended (training, encoding, sealing).
  let handoff: Date
  let overlapping: Bool
  /// Sends the update (and, with secure aggregation, takes part in its unmasking); logs the round's figures.
  let send: () throws -> Void
}

/// CPU time (user + system, all threads) this process has used so far, in seconds.
func processCPUSeconds() -> Double {
  var u = rusage()
  getrusage(RUSAGE_SELF.rawValue, &u)
  return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
}
