import AgoraRounds
import AgoraRegistry
import AgoraSecureAggregation
import AgoraTensor
import AgoraTransport
import AgoraWire
import Foundation

/// A round from its announcement to its outcome.
extension CoordinatorService {
  /// Holds round `r`; nil when a stop request abandoned it (nothing of it is recorded).
  func round(_ r: Int) throws -> RoundOutcome? {
    // Only a committed version is announced: the previous round's version is in the registry before any node
    // trains on it (a crash in the write then never leaves nodes holding a number the registry gives to another).
    try finishWrite()
    // Take what arrived while the last round was being applied and scored (heartbeats above all) before
    // deciding who is gone.
    for _ in 0..<100_000 { guard pump(timeout: 0) else { break } }
    _ = sessions.expire()
    let h = open(round: r, selected: sessions.live)
    held = h
    defer { held = nil; receiver.consumer = nil }
    FaultInjection.damage(store.blobPath(versionHash), round: r)
    announce(h, to: h.selected)
    notify(.roundStarted(round: r, expected: h.selected.count, deadline: h.deadline))
    if h.secure != nil {
      // Nodes that did not get through the share exchange cannot send an update this round.
      let taking = secureSetup(h) ?? []
      for fp in h.wanted.subtracting(taking) { h.release(fp) }
    }
    wait(for: h)
    return try close(h)
  }

  /// Round `r` made ready for `selected`: the receiver set to take its updates (and, with late updates taken,
  /// the previous round's still streaming), a collector of its intake, its secure aggregation.
  func open(round r: Int, selected: [SessionTable.Session]) -> HeldRound {
    let fed = config.federation
    let started = Date()
    // With late updates taken, the previous round's uploads go on (an active one keeps streaming into the
    // staging buffer) and are folded into this round with staleness weighting.
    let stale = fed.lateUpdates == .stale && r > 1
    receiver.context.previous = stale ? (receiver.context.round, receiver.context.baseHash) : nil
    receiver.reset(endpoint: endpoint, keepRound: stale ? receiver.context.round : nil)
    receiver.context.round = UInt64(r)
    receiver.context.baseHash = versionHash
    receiver.peakActive = 0
    scorer?.reset()
    let settings = RoundCollector.Settings(round: UInt64(r), format: fed.compression.format,
                                           // The most steps an update taken this round may have run (a late one ran its own round's).
                                           innerSteps: (1...r).map(fed.innerSteps(round:)).max() ?? fed.innerSteps,
                                           batch: fed.batch, context: modelConfig.contextLength, learningRate: fed.learningRate,
                                           stalenessExponent: fed.stalenessExponent,
                                           // From an untrained version 0 (random weights, no warm start) held-out loss says nothing of
                                           // an update's direction: honest updates can raise it and flipped ones lower it (SPEC §7.1).
                                           score: fed.scoreUpdates && (version > 0 || fed.warmStartSteps > 0 || fed.fineTune != nil), roundSteps: fed.innerSteps(round: r),
                                           dpClip: fed.dpClip, momentWeighting: fed.momentWeighting, weighBy: fed.weighBy)
    let collector = RoundCollector(settings: settings, staging: staging, sum: sum, acceptance: acceptance, scorer: scorer,
                                   lastStep: stepper.patch?.path, names: Dictionary(selected.map { ($0.fingerprint, ($0.name, $0.donor)) }, uniquingKeysWith: { a, _ in a }),
                                   sessions: sessions, currentBlob: { [unowned self] in currentBlob() },
                                   rows: EmbeddingRowWeights(offset: embeddingOffset, rows: federated.embedding.rows, width: modelConfig.channels,
                                                              parameters: fed.momentWeighting > 0 ? sum.count : nil),
                                   relative: { [unowned self] in rowRelative[$0] }, log: log, notify: { [weak self] in self?.notify($0) })
    receiver.consumer = collector
    sum.zero()
    if fed.secureAggregation {
      collector.secure = SecureRoundState(round: UInt64(r), party: SecureAggregationCoordinator(
        federation: fed.id, round: UInt64(r),
        parameters: SecureAggregationParameters(neighbours: fed.secureAggregationNeighbours, thresholdFraction: fed.secureAggregationThreshold)))
    }
    return HeldRound(number: r, started: started, deadline: Date(timeIntervalSinceNow: fed.deadlineSeconds), selected: selected, collector: collector)
  }

  /// Takes messages until every selected node's say is in, the deadline passes or a stop is asked for. Nodes
  /// that are gone, left, restarted or abandon the round are not waited for.
  func wait(for h: HeldRound) {
    let r = h.number
    while !stop.isSet && Date() < h.deadline && !h.complete {
      pump(timeout: 0.1)
      // No wait is silent: every minute (`coordinator.wait_report_seconds`), whom the round waits for, and the round once more to those of them that
      // are not sending (an announcement lost on the way must not hold a node, and the round, until the deadline;
      // a node ignores a ROUND it already holds, SPEC §4.1).
      if Date().timeIntervalSince(h.lastSaid) >= config.waitReportSeconds {
        h.lastSaid = Date()
        let missing = h.missing.sorted()
        let sending = missing.filter { receiver.isReceiving(node: $0) }
        let quiet = missing.filter { !receiver.isReceiving(node: $0) }
        log("  round \(r): waiting for \(missing.count) of \(h.wanted.count) updates until the deadline in \(Int(h.deadline.timeIntervalSinceNow)) s"
            + (sending.isEmpty ? "" : "; uploading: " + sending.map { Printable.line(h.collector.name($0)) }.joined(separator: ", "))
            + (quiet.isEmpty ? "" : "; announced again to " + quiet.map { Printable.line(h.collector.name($0)) }.joined(separator: ", ") + " (training, or the announcement was lost)"))
        announce(h, to: h.selected.filter { quiet.contains($0.fingerprint) }, again: true)
      }
      // A node that died is not waited for: once it is expired, the round goes on without it.
      // Its transfers are abandoned too: a stalled upload frees the slot of those waiting behind it.
      for gone in sessions.expire() {
        receiver.forget(node: gone.fingerprint, endpoint: endpoint)
        if h.release(gone.fingerprint) { log("  \(gone.name) stopped answering; round \(r) goes on without it") }
      }
      // A node that left (LEAVE) is not waited for either (one that abandons the round is released by `pump`).
      for fp in sessions.takeLeft() {
        receiver.forget(node: fp, endpoint: endpoint)
        if h.release(fp) { log("  \(h.collector.name(fp)) left; round \(r) goes on without it") }
      }
      receiver.refuseStalled(after: config.federation.uploadStallSeconds, endpoint: endpoint)
      // A selected node that joined again during the round has restarted and lost its work: it takes part
      // from the next round on (fetching the latest version by hash then).
      for fp in h.missing {
        if let s = sessions.session(fp), s.joined > h.started, h.release(fp) { log("  \(s.name) restarted; round \(r) goes on without it") }
      }
    }
  }

  /// The round's outcome: the next version when the quorum's updates are in (unmasked first under secure
  /// aggregation), recorded with the round and its contributions; nil when a stop request abandoned it.
  func close(_ h: HeldRound) throws -> RoundOutcome? {
    let fed = config.federation
    let r = h.number, collector = h.collector
    if receiver.maxActive > 1 { log("  round \(r): up to \(receiver.peakActive) uploads streamed at once (rounds.concurrent_uploads allows \(receiver.maxActive))") }
    let needed = h.needed(quorum: fed.quorum)
    var applied = false
    var note = ""
    if !stop.isSet && collector.accepted >= needed && collector.weightTotal > 0 && h.secure != nil && !secureFinish(h) {
      note = "secure aggregation: not unmasked"
    } else if !stop.isSet && collector.accepted >= needed && collector.weightTotal > 0 {
      if h.secure == nil {
        // Differential privacy: the coordinator's noise on the sum of clipped updates, N(0, (z·C)²) per value.
        if fed.dpClip > 0 { try GaussianNoise.add(sigma: fed.dpNoiseMultiplier * fed.dpClip, to: sum.buffer, threads: Parallel.threads) }
        collector.rows.finish(sum.pointer, count: sum.count, weightTotal: collector.weightTotal)
      }
      FaultInjection.at("before-step", round: r)
      applied = try step(round: r)
      FaultInjection.at("after-step", round: r)
      if !applied {
        note = "no change"
        log("  round \(r): the step leaves every parameter as it was; no new version (version \(version) stays)")
      }
    } else {
      note = "quorum not reached (\(collector.accepted) of \(needed))"
      log("  round \(r): \(collector.accepted) of \(h.selected.count) updates, quorum \(needed) not reached; version \(version) stays")
    }
    if !stop.isSet { acceptance.endRound(accepted: collector.onTime, cosines: collector.onTimeCosines) }
    // A round stopped by SIGINT/SIGTERM is abandoned whole: nothing of it is recorded.
    guard !stop.isSet || applied else { return nil }
    let losses = collector.losses
    var outcome = RoundOutcome(round: r, version: version, hash: hex(versionHash), started: h.started, ended: Date(), selected: h.selected.count,
                               donors: h.selected.filter(\.donor).count, accepted: collector.accepted, rejected: collector.rejected, late: collector.late,
                               tokens: collector.tokens, bytesIn: collector.bytesIn,
                               meanLoss: losses.isEmpty ? .nan : losses.reduce(0, +) / Double(losses.count), bitsPerByte: [], applied: applied, note: note)
    outcome.bitsPerByte = evaluate()
    let record = RoundRecord(number: r, startedAt: h.started.timeIntervalSince1970, endedAt: Date().timeIntervalSince1970, selected: h.selected.count,
                             accepted: outcome.accepted, rejected: outcome.rejected.count, late: outcome.late,
                             outcome: applied ? "version \(version)" : note, version: applied ? version : nil)
    if applied {
      persister.persist(hash: versionHash, state: pendingState,
                        version: VersionRecord(number: version, parent: versionParent, hash: hex(versionHash), optimizer: nil,
                                               optimizerKind: stepper.outer.kind.rawValue, round: r, createdAt: Date().timeIntervalSince1970,
                                               signature: hex(versionSignature), bitsPerByte: outcome.bitsPerByte, tokens: Int(outcome.tokens),
                                               contributors: Set(collector.contributions.map(\.node)).count, preset: fed.preset, config: configJSON,
                                               tokenizer: tokenizerHash).withPrivacy(privacy(h, parent: versionParent)),
                        round: record, contributions: collector.contributions)
      pendingState = nil
    } else {
      try store.commit(round: record, contributions: collector.contributions)
    }
    return outcome
  }

  /// ROUND to `selected` nodes of round `h` (a donor's names the public shard it trains on). `again`: a repeat to
  /// nodes the round still waits for (a donor keeps its shard).
  func announce(_ h: HeldRound, to selected: [SessionTable.Session], again: Bool = false) {
    let fed = config.federation
    let lrBits = Float(fed.learningRate).bitPattern
    for s in selected {
      var shard = Message.noHash
      if again, let given = h.donorShards[s.fingerprint] {
        shard = given
      } else if s.donor, !shards.isEmpty {
        let p = shards[shardCursor % shards.count]
        shardCursor += 1
        shard = p.hash
        h.donorShards[s.fingerprint] = p.hash
        log("  \(s.name) (donor) trains on public shard \(p.language) #\(p.index)")
      }
      endpoint.send(.round(round: UInt64(h.number), baseHash: versionHash, innerSteps: UInt32(fed.innerSteps(round: h.number)), batch: UInt32(fed.batch),
                           learningRateBits: lrBits, deadlineMillis: UInt64(h.deadline.timeIntervalSince1970 * 1000),
                           modelBytes: UInt64(params.count * 4), patchFrom: parentHash, patchHash: stepper.patch?.hash ?? Message.noHash, shardHash: shard,
                           version: UInt64(version), signature: versionSignature),
                    // The connection it has now: a node that reconnected since the round began has a new routing id, and
                    // a message to the old one is dropped without a word.
                    to: sessions.session(s.fingerprint)?.peer ?? s.peer)
    }
  }

  /// Makes the next version from the mean Δ in `sum` (`VersionStep`), signs it and publishes its patch. False
  /// when the step leaves θ bit-identical: no version is made.
  func step(round r: Int) throws -> Bool {
    try finishWrite()  // the parameters are about to change
    var marks: [(String, Date)] = [("start", Date())]
    if staging.inParams {
      try staging.restore(blob: store.blobPath(versionHash))
      marks.append(("θ read back", Date()))
    }
    defer {
      if ProcessInfo.processInfo.environment["AGORA_TRACE"] != nil {
        log("  step: " + zip(marks.dropFirst(), marks).map { String(format: "%@ %.0f ms", $0.0.0, $0.0.1.timeIntervalSince($0.1.1) * 1000) }.joined(separator: ", "))
      }
    }
    let parent = versionHash
    guard let made = try stepper.run(round: r, parent: parent, marks: &marks) else { return false }
    current = try signed(number: nextNumber, parent: version, hash: made.hash, parentHash: parent)
    nextNumber += 1
    pendingState = made.state
    marks.append(("hash and signature", Date()))
    if let old = stepper.patch {
      blobs.unpublish(hash: old.hash)
      if old.path != made.patch?.path { try? FileManager.default.removeItem(atPath: old.path) }
      stepper.patch = nil
    }
    if let n = made.patch {
      try blobs.publish(path: n.path, hash: n.hash, size: n.size)
      stepper.patch = (parent, n.hash, n.path)
    }
    return true
  }
}
