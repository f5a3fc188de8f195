import AgoraRounds
import AgoraCrypto
import AgoraData
import AgoraModel
import AgoraStorage
import AgoraTransport
import AgoraWire
import Foundation

/// A node's side of the vocabulary phase: it counts its own text (train.txt of each language, as it will train
/// on it), drops rare pre-tokens (k, m, optional noise), sends each table signed, and waits for the
/// coordinator's signed tokenizer, which it checks and keeps where `model.tokenizer` says. Only the tables
/// leave the node; the log says how many entries and octets.
public final class VocabularyClient {
  public let config: NodeConfig
  public var log: (String) -> Void = { print($0) }

  public init(config: NodeConfig) { self.config = config }

  public func run(stop: ManagedAtomicFlag = ManagedAtomicFlag()) throws {
    let fed = config.federation
    guard let v = fed.vocabulary else { return }
    let identity = try Identity.load(from: config.identity)
    let coordinator = try EnrolmentCard.load(fed.coordinatorCard)
    var payloads: [[UInt8]] = []
    if config.donor || config.data.isEmpty {
      payloads = [VocabularyStatement.noText]
      log("\(config.name): vocabulary phase: no text of its own; asking for the federation's tokenizer")
    } else {
      for s in try LanguageSource.discover(config.data) {
        let texts = [try LanguageText.read(s.train, maxBytes: v.maxBytesPerLanguage)]
        let counts = PreTokenCounts.count(language: s.name, texts: texts)
        let (kept, f, pieces) = counts.thresholded(texts: texts, fragmentLength: v.fragmentLength, minCount: v.minCount, minDocuments: v.minDocuments,
                                                   noise: v.noise) {
          Sodium.randomBytes(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        }
        let table = kept.encoded()
        payloads.append(table)
        let fragments = v.fragmentLength > 0 && f.dropped > 0
          ? "; sending \(pieces.kept) pieces of \(v.fragmentLength) characters of those (kept back \(pieces.dropped) pieces, thresholded alike)" : ""
        log("\(config.name): vocabulary phase: \(s.name): sending \(f.kept) pre-tokens (\(table.count) bytes); kept back \(f.dropped) seen fewer than \(v.minCount) times or in fewer than \(v.minDocuments) documents (\(f.droppedOccurrences) of \(f.keptOccurrences + f.droppedOccurrences) occurrences)\(fragments)")
      }
    }
    let signatures = try payloads.map { try Sodium.sign(VocabularyStatement.table(federation: fed.id, table: $0), secretKey: identity.signSecret) }
    // Sealed to the coordinator's aggregation key: only the coordinator opens them (not a relay, not a log).
    guard let aggregation = coordinator.aggregationPublic else {
      throw ConfigError(file: fed.coordinatorCard, key: "-", problem: "the coordinator's card has no aggregation key")
    }
    let sealed = try payloads.map { try Sodium.seal($0, to: aggregation) }
    let endpoint = try Endpoint.client(connect: fed.endpoint, serverKey: coordinator.curvePublic,
                                       keys: CurveKeys(publicKey: identity.card.curvePublic, secretKey: identity.curveSecret))
    defer { endpoint.close() }
    func send() {
      for i in payloads.indices {
        endpoint.send(.vocabulary(remaining: UInt16(payloads.count - 1 - i), signature: signatures[i], payload: Payload(sealed[i])))
      }
    }
    send()
    var sentAt = Date(), every: Double = 5
    // Tables can be lost: a coordinator that restarts during the phase, or one that is between the phase and its
    // rounds (the phase's socket closed, the round's not yet bound) when they arrive. Until the tokenizer comes
    // they are sent again after 5 s, then 10, 20, 40, and every minute (a table sent again replaces the first).
    let deadline = Date(timeIntervalSinceNow: v.phaseSeconds + 120)
    while Date() < deadline && !stop.isSet {
      if Date().timeIntervalSince(sentAt) > every { send(); sentAt = Date(); every = min(60, 2 * every) }
      guard let m = endpoint.receive(timeout: 0.5), case .success(let msg) = m.message else { continue }
      switch msg {
      case .tokenizer(let hash, let signature, let payload):
        let json = payload.array
        guard Sodium.blake2b(json) == hash else { throw TransferError.protocolViolation("the tokenizer sent does not have the hash it is sent with") }
        guard Sodium.verify(signature, message: VocabularyStatement.tokenizer(federation: fed.id, hash: hash), publicKey: coordinator.signPublic) else {
          throw TransferError.protocolViolation("the tokenizer is not signed by the coordinator's key")
        }
        let tok = try Tokenizer(json: Data(json))
        if let size = v.size, tok.vocabSize != size {
          throw TransferError.protocolViolation("the tokenizer has \(tok.vocabSize) tokens; the federation's setting is \(size)")
        }
        try AtomicFile.write(Data(json), to: fed.tokenizer, createDirectory: true)
        log("\(config.name): vocabulary phase: the federation's tokenizer \(hex(hash).prefix(12)) (\(tok.vocabSize) tokens, signed by the coordinator) saved to \(fed.tokenizer)")
        return
      case .error(_, let text, _):
        log("\(config.name): vocabulary phase: the coordinator says: \(Printable.line(text))")
      default:
        continue
      }
    }
    throw TransferError.timeout("no tokenizer from the coordinator within \(Int(v.phaseSeconds + 120)) s")
  }
}
