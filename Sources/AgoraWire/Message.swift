/// Agora's wire messages (Protocol/SPEC.md, "Messages"). A message travels as a ZeroMQ multipart message:
///
///     frame 0: version frame, 4 bytes: "AGR" ‖ protocol version (1)
///     frame 1: body: type (1 byte) ‖ fields, at most `Wire.maxBody` bytes
///     frame 2: payload (only for the chunk messages), at most `Wire.maxPayload` bytes
///
/// On a ROUTER socket the routing-id frame comes before frame 0 and is handled by the transport.
public enum Wire {
  public static let versionFrame: [UInt8] = [0x41, 0x47, 0x52, 0x02]  // "AGR" 2
  public static let protocolVersion: UInt8 = 2
  public static let maxBody = 64 << 10
  public static let maxPayload = (16 << 20) + 64
  public static let maxString = 1024
  public static let maxBlob = 8 << 10
  /// The largest DECLARATION payload (a declaration's JSON).
  public static let maxDeclaration = 1 << 20
}

/// ENROL's fixed sizes (SPEC §2.2).
public enum InvitationWire {
  /// An invitation token: 64 signed octets and the coordinator's signature.
  public static let tokenSize = 128
}

public enum MessageType: UInt8, Sendable, CaseIterable {
  case join = 0x01, welcome = 0x02, round = 0x03, fetch = 0x04, blobChunk = 0x05,
       uploadBegin = 0x06, uploadChunk = 0x07, uploadEnd = 0x08, ack = 0x09,
       heartbeat = 0x0A, leave = 0x0B, error = 0x0C, counts = 0x0D,
       evaluation = 0x0E, secaggKeys = 0x0F, secaggRoster = 0x10, secaggShares = 0x11, secaggUnmask = 0x12, secaggReveal = 0x13,
       vocabulary = 0x14, tokenizer = 0x15, declaration = 0x16, enrol = 0x17, enrolled = 0x18
}

/// Every message of the protocol. Large binary data (model and update chunks) lives in the payload frame.
public enum Message: Equatable, Sendable {
  /// Node → coordinator: first message of a session.
  /// Node → coordinator: `role` 0 is an institution training on its own data, 1 a compute donor (trains on
  /// public shards the coordinator assigns).
  /// `terms`: what the node will train with (checked against the federation's). `name` is informational: the
  /// coordinator shows the name of the node's enrolment card.
  case join(name: String, software: String, latestVersion: [UInt8], role: UInt8, terms: TrainingTerms)
  /// Coordinator → node: session accepted, with the parameters the node must use.
  case welcome(federation: String, heartbeatMillis: UInt32, liveness: UInt8, chunkSize: UInt32, credit: UInt16, aggregationKey: [UInt8])
  /// Coordinator → node: round `round` starts from `baseHash`; train `innerSteps` and send before `deadlineMillis` (Unix ms).
  /// A node that holds version `patchFrom` may fetch the blob `patchHash` (an int8 step) instead of the whole model
  /// and apply it; both are 32 zero octets when there is no patch. A donor trains this round on the public shard
  /// `shardHash` (zero for institutions, which train on their own data). `version` is the base's number and
  /// `signature` the coordinator's Ed25519 signature of it (the registry's VersionStatement, with `patchFrom`
  /// as the parent hash): a node checks it before training.
  case round(round: UInt64, baseHash: [UInt8], innerSteps: UInt32, batch: UInt32, learningRateBits: UInt32, deadlineMillis: UInt64, modelBytes: UInt64,
             patchFrom: [UInt8], patchHash: [UInt8], shardHash: [UInt8], version: UInt64, signature: [UInt8])
  /// Node → coordinator: send the blob with this content hash from chunk `fromChunk`, at most `credit` chunks ahead.
  case fetch(hash: [UInt8], fromChunk: UInt32, credit: UInt16)
  /// Coordinator → node: one chunk of a blob (payload frame = the bytes).
  case blobChunk(hash: [UInt8], index: UInt32, count: UInt32, payload: Payload)
  /// Node → coordinator: an update transfer begins (or resumes) with this envelope head.
  case uploadBegin(transfer: UInt64, round: UInt64, chunks: UInt32, head: [UInt8])
  /// Node → coordinator: sealed chunk `index` of a transfer (payload frame = envelope chunk).
  case uploadChunk(transfer: UInt64, index: UInt32, payload: Payload)
  /// Node → coordinator: the envelope's final (signature) message, with the training figures.
  /// `languages`: tokens trained on per language (at most 64, names ≤ 32 bytes, strictly increasing names).
  /// `cpuMillis`: CPU time the node spent on this round (training and encoding), in milliseconds.
  case uploadEnd(transfer: UInt64, final: [UInt8], tokens: UInt64, steps: UInt32, lossBits: UInt32, cpuMillis: UInt64, languages: [LanguageTokens])
  /// Receiver → sender: chunks below `next` are stored; up to `credit` more may be sent.
  case ack(transfer: UInt64, next: UInt32, credit: UInt16)
  /// Either way: liveness (any message counts as one too).
  case heartbeat
  /// Either way: the session ends; `kind` says whether the federation is over.
  case leave(kind: LeaveKind, reason: String)
  /// Either way: a request failed; `subject` says which request it answers.
  case error(code: UInt16, message: String, subject: ErrorSubject)
  /// Node → coordinator, once per session when the federation weighs embedding rows by token counts: how often
  /// each token of the vocabulary occurs in the node's training text (payload frame = `vocabulary` little-endian
  /// u32 counts), counts below `minimum` sent as zero.
  case counts(vocabulary: UInt32, minimum: UInt32, payload: Payload)
  /// Node → coordinator: bits per byte of version `version` (content hash `hash`) on the node's own validation
  /// text, per language — only these numbers leave the node — signed with the node's identity
  /// (`LanguageScore.statement`).
  case evaluation(version: UInt64, hash: [UInt8], scores: [LanguageScore], signature: [UInt8])
  /// Node → coordinator, secure aggregation (SPEC §8): this node's signed keys for round `round`.
  case secaggKeys(round: UInt64, keys: SecAggKeys)
  /// Coordinator → node: the round's participants (strictly increasing node ids) and encoding; payload frame =
  /// `terms.ranges` per-tensor ranges then `terms.rows` per-row weight totals, little-endian binary32.
  case secaggRoster(round: UInt64, terms: SecAggRosterTerms, participants: [SecAggParticipant], payload: Payload)
  /// Either way: share boxes (node → coordinator: one per neighbour, `peer` the recipient; coordinator → node:
  /// those addressed to it, `peer` the sender).
  case secaggShares(round: UInt64, shares: [SecAggShareBox])
  /// Coordinator → node: reveal the self-mask shares of `survivors` and the mask-key shares of `dropped`.
  case secaggUnmask(round: UInt64, survivors: [[UInt8]], dropped: [[UInt8]])
  /// Node → coordinator: the shares asked for.
  case secaggReveal(round: UInt64, shares: [SecAggRevealed])
  /// Node → coordinator, the vocabulary phase (SPEC §4.4): one language's pre-token count table (payload frame,
  /// "AGVC"), signed by the node (statement: "AGORA-VOCAB-v1" ‖ federation ‖ BLAKE2b-256 of the table);
  /// `remaining`: how many more tables this node sends after this one. Allowed before JOIN.
  case vocabulary(remaining: UInt16, signature: [UInt8], payload: Payload)
  /// Coordinator → node: the federation's tokenizer.json (payload frame), its BLAKE2b-256 `hash` (what version 0
  /// and JOIN's terms name) and the coordinator's signature ("AGORA-TOKENIZER-v1" ‖ federation ‖ hash).
  case tokenizer(hash: [UInt8], signature: [UInt8], payload: Payload)
  /// Node → coordinator, once per session after WELCOME (SPEC §4.5): what the node declares about its training
  /// data (payload frame: the declaration's JSON, at most `Wire.maxDeclaration` octets), its BLAKE2b-256 `hash`
  /// and the node's signature ("AGORA-DECLARATION-v1" ‖ federation ‖ hash). Metadata only: never text.
  case declaration(hash: [UInt8], signature: [UInt8], payload: Payload)
  /// Invitee → coordinator, the only message of an invitation's session (SPEC §2.2): the invitation's signed
  /// `token` (128 octets) and the card it enrols (`name`, `contact`, Ed25519 `signKey`, CurveZMQ `curveKey`),
  /// with the new signing key's `signature` over `EnrolmentStatement` (it holds that key).
  case enrol(token: [UInt8], name: String, contact: String, signKey: [UInt8], curveKey: [UInt8], signature: [UInt8])
  /// Coordinator → invitee: the card is enrolled as a compute donor under node id `node`; the payload frame is the
  /// enrolment bundle (JSON: the federation's settings for its nodes, and the tokenizer).
  case enrolled(node: [UInt8], payload: Payload)

  public var type: MessageType {
    switch self {
    case .join: return .join
    case .welcome: return .welcome
    case .round: return .round
    case .fetch: return .fetch
    case .blobChunk: return .blobChunk
    case .uploadBegin: return .uploadBegin
    case .uploadChunk: return .uploadChunk
    case .uploadEnd: return .uploadEnd
    case .ack: return .ack
    case .heartbeat: return .heartbeat
    case .leave: return .leave
    case .error: return .error
    case .counts: return .counts
    case .evaluation: return .evaluation
    case .secaggKeys: return .secaggKeys
    case .secaggRoster: return .secaggRoster
    case .secaggShares: return .secaggShares
    case .secaggUnmask: return .secaggUnmask
    case .secaggReveal: return .secaggReveal
    case .vocabulary: return .vocabulary
    case .tokenizer: return .tokenizer
    case .declaration: return .declaration
    case .enrol: return .enrol
    case .enrolled: return .enrolled
    }
  }

  // MARK: - Encoding

  /// The frames of this message: version frame, body, and the payload frame for chunk messages.
  public func frames() -> [[UInt8]] {
    let (frames, payload) = encoded()
    return payload.map { frames + [$0.array] } ?? frames
  }

  /// The version frame and body, and the payload frame (for chunk messages) as it is, uncopied.
  public func encoded() -> (frames: [[UInt8]], payload: Payload?) {
    var w = ByteWriter(capacity: 96)
    w.u8(type.rawValue)
    var payload: Payload? = nil
    switch self {
    case .join(let name, let software, let latest, let role, let t):
      w.string(name); w.string(software); w.raw(latest); w.u8(role)
      w.raw(t.tokenizerHash); w.raw(t.modelHash); w.u32(t.innerSteps); w.u32(t.batch); w.u32(t.learningRateBits); w.u32(t.rounds)
    case .welcome(let fed, let hb, let live, let chunk, let credit, let key):
      w.string(fed); w.u32(hb); w.u8(live); w.u32(chunk); w.u16(credit); w.raw(key)
    case .round(let r, let base, let steps, let batch, let lr, let deadline, let bytes, let from, let patch, let shard, let version, let sig):
      w.u64(r); w.raw(base); w.u32(steps); w.u32(batch); w.u32(lr); w.u64(deadline); w.u64(bytes); w.raw(from); w.raw(patch); w.raw(shard)
      w.u64(version); w.raw(sig)
    case .fetch(let hash, let from, let credit):
      w.raw(hash); w.u32(from); w.u16(credit)
    case .blobChunk(let hash, let index, let count, let p):
      w.raw(hash); w.u32(index); w.u32(count); payload = p
    case .uploadBegin(let t, let r, let chunks, let head):
      w.u64(t); w.u64(r); w.u32(chunks); w.blob(head)
    case .uploadChunk(let t, let index, let p):
      w.u64(t); w.u32(index); payload = p
    case .uploadEnd(let t, let final, let tokens, let steps, let loss, let cpu, let langs):
      w.u64(t); w.blob(final); w.u64(tokens); w.u32(steps); w.u32(loss); w.u64(cpu)
      w.u8(UInt8(langs.count))
      for l in langs { w.string(l.language); w.u64(l.tokens) }
    case .ack(let t, let next, let credit):
      w.u64(t); w.u32(next); w.u16(credit)
    case .heartbeat:
      break
    case .leave(let kind, let reason):
      w.u8(kind.rawValue); w.string(reason)
    case .error(let code, let message, let subject):
      w.u16(code); w.string(message)
      switch subject {
      case .none: w.u8(0)
      case .transfer(let t): w.u8(1); w.u64(t)
      case .blob(let h): w.u8(2); w.raw(h)
      case .round(let r): w.u8(3); w.u64(r)
      }
    case .counts(let vocabulary, let minimum, let p):
      w.u32(vocabulary); w.u32(minimum); payload = p
    case .evaluation(let version, let hash, let scores, let sig):
      LanguageScore.write(version: version, hash: hash, scores: scores, to: &w); w.raw(sig)
    case .secaggKeys(let r, let k):
      w.u64(r); k.write(to: &w)
    case .secaggRoster(let r, let t, let ps, let p):
      w.u64(r); w.u8(t.ringBits); w.u16(t.neighbours); w.u16(t.thresholdPermille); w.u32(t.ranges); w.u32(t.rows)
      w.u16(UInt16(ps.count))
      for x in ps { w.raw(x.node); x.keys.write(to: &w) }
      payload = p
    case .secaggShares(let r, let shares):
      w.u64(r); w.u16(UInt16(shares.count))
      for x in shares { w.raw(x.peer); w.u16(UInt16(x.box.count)); w.raw(x.box) }
    case .secaggUnmask(let r, let survivors, let dropped):
      w.u64(r); SecAggWire.ids(survivors, &w); SecAggWire.ids(dropped, &w)
    case .secaggReveal(let r, let shares):
      w.u64(r); w.u16(UInt16(shares.count))
      for x in shares { w.raw(x.about); w.u8(x.kind); w.u8(x.x); w.raw(x.share) }
    case .vocabulary(let remaining, let sig, let p):
      w.u16(remaining); w.raw(sig); payload = p
    case .tokenizer(let hash, let sig, let p), .declaration(let hash, let sig, let p):
      w.raw(hash); w.raw(sig); payload = p
    case .enrol(let token, let name, let contact, let signKey, let curveKey, let sig):
      w.raw(token); w.string(name); w.string(contact); w.raw(signKey); w.raw(curveKey); w.raw(sig)
    case .enrolled(let node, let p):
      w.raw(node); payload = p
    }
    return ([Wire.versionFrame, w.bytes], payload)
  }

  // MARK: - Decoding

  /// Decodes a message from its frames (without a routing-id frame). Trusts no length or count.
  public static func decode(_ frames: [[UInt8]]) throws -> Message {
    try decode(received: frames.map { Payload($0) })
  }

  /// Decodes a message whose frames may live in received memory: the payload frame is kept as it is, the
  /// others are small and copied.
  public static func decode(received frames: [Payload]) throws -> Message {
    guard frames.count >= 2 else { throw WireError.frameCount(frames.count) }
    guard frames.count <= 3 else { throw WireError.frameCount(frames.count) }
    let v = frames[0].array
    guard v.count == 4, v[0] == 0x41, v[1] == 0x47, v[2] == 0x52 else { throw WireError.notAgora }
    guard v[3] == Wire.protocolVersion else { throw WireError.unsupportedVersion(v[3]) }
    let body = frames[1].array
    guard !body.isEmpty else { throw WireError.emptyBody }
    guard body.count <= Wire.maxBody else { throw WireError.decode(.tooLarge("body", value: body.count, bound: Wire.maxBody)) }
    guard let type = MessageType(rawValue: body[0]) else { throw WireError.unknownType(body[0]) }
    let hasPayload = type == .blobChunk || type == .uploadChunk || type == .counts || type == .secaggRoster || type == .vocabulary || type == .tokenizer || type == .declaration
      || type == .enrolled
    guard frames.count == (hasPayload ? 3 : 2) else { throw WireError.payloadFrame(type: type, present: frames.count == 3) }
    if hasPayload {
      guard frames[2].count <= Wire.maxPayload else { throw WireError.decode(.tooLarge("payload", value: frames[2].count, bound: Wire.maxPayload)) }
      guard !frames[2].isEmpty else { throw WireError.decode(.invalid("zero-size chunk")) }
    }
    var r = ByteReader(Array(body.dropFirst()))
    do {
      let m: Message
      switch type {
      case .join:
        let name = try r.string("name", max: 256), software = try r.string("software", max: 256), latest = try r.raw(32, "latest version")
        let role = try r.u8("role")
        guard role <= 1 else { throw DecodeError.invalid("unknown role \(role) in JOIN (0 institution, 1 donor)") }
        let terms = TrainingTerms(tokenizerHash: try r.raw(32, "tokenizer hash"), modelHash: try r.raw(32, "model hash"),
                                  innerSteps: try r.u32("inner steps"), batch: try r.u32("batch"), learningRateBits: try r.u32("learning rate"),
                                  rounds: try r.u32("rounds"))
        m = .join(name: name, software: software, latestVersion: latest, role: role, terms: terms)
      case .welcome:
        let fed = try r.string("federation", max: 255)
        let hb = try r.u32("heartbeat"), live = try r.u8("liveness"), chunk = try r.u32("chunk size"), credit = try r.u16("credit")
        let key = try r.raw(32, "aggregation key")
        guard hb >= 10, live >= 1, chunk >= 1024, Int(chunk) <= 16 << 20, credit >= 1 else {
          throw DecodeError.invalid("welcome parameters out of range (heartbeat \(hb) ms, liveness \(live), chunk \(chunk), credit \(credit))")
        }
        m = .welcome(federation: fed, heartbeatMillis: hb, liveness: live, chunkSize: chunk, credit: credit, aggregationKey: key)
      case .round:
        m = .round(round: try r.u64("round"), baseHash: try r.raw(32, "base hash"), innerSteps: try r.u32("inner steps"),
                   batch: try r.u32("batch"), learningRateBits: try r.u32("learning rate"), deadlineMillis: try r.u64("deadline"),
                   modelBytes: try r.u64("model bytes"), patchFrom: try r.raw(32, "patch from"), patchHash: try r.raw(32, "patch hash"), shardHash: try r.raw(32, "shard hash"),
                   version: try r.u64("version"), signature: try r.raw(64, "signature"))
      case .fetch:
        let hash = try r.raw(32, "hash"), from = try r.u32("from chunk"), credit = try r.u16("credit")
        guard credit >= 1 else { throw DecodeError.invalid("fetch with zero credit") }
        m = .fetch(hash: hash, fromChunk: from, credit: credit)
      case .blobChunk:
        let hash = try r.raw(32, "hash"), index = try r.u32("index"), count = try r.u32("count")
        guard count >= 1, index < count else { throw DecodeError.invalid("chunk index \(index) outside a blob of \(count) chunks") }
        m = .blobChunk(hash: hash, index: index, count: count, payload: frames[2])
      case .uploadBegin:
        let t = try r.u64("transfer"), round = try r.u64("round"), chunks = try r.u32("chunks")
        let head = try r.blob("envelope head", max: Wire.maxBlob)
        guard chunks >= 1 else { throw DecodeError.invalid("upload of zero chunks") }
        m = .uploadBegin(transfer: t, round: round, chunks: chunks, head: head)
      case .uploadChunk:
        m = .uploadChunk(transfer: try r.u64("transfer"), index: try r.u32("index"), payload: frames[2])
      case .uploadEnd:
        let t = try r.u64("transfer"), final = try r.blob("final message", max: Wire.maxBlob), tokens = try r.u64("tokens")
        let steps = try r.u32("steps"), loss = try r.u32("loss"), cpu = try r.u64("cpu milliseconds"), n = Int(try r.u8("language count"))
        guard n <= LanguageTokens.maxCount else { throw DecodeError.tooLarge("language count", value: n, bound: LanguageTokens.maxCount) }
        var langs: [LanguageTokens] = []
        for _ in 0..<n {
          let l = LanguageTokens(language: try r.string("language", max: LanguageTokens.maxName), tokens: try r.u64("language tokens"))
          try LanguageTokens.checkName(l.language, after: langs.last?.language)
          langs.append(l)
        }
        m = .uploadEnd(transfer: t, final: final, tokens: tokens, steps: steps, lossBits: loss, cpuMillis: cpu, languages: langs)
      case .ack:
        m = .ack(transfer: try r.u64("transfer"), next: try r.u32("next"), credit: try r.u16("credit"))
      case .heartbeat:
        m = .heartbeat
      case .leave:
        let k = try r.u8("leave kind")
        guard let kind = LeaveKind(rawValue: k) else { throw DecodeError.invalid("unknown LEAVE kind \(k) (0 session, 1 finished)") }
        m = .leave(kind: kind, reason: try r.string("reason", max: Wire.maxString))
      case .error:
        let code = try r.u16("code"), message = try r.string("message", max: Wire.maxString)
        let subject: ErrorSubject
        switch try r.u8("subject kind") {
        case 0: subject = .none
        case 1: subject = .transfer(try r.u64("transfer"))
        case 2: subject = .blob(try r.raw(32, "hash"))
        case 3: subject = .round(try r.u64("round"))
        case let k: throw DecodeError.invalid("unknown ERROR subject kind \(k) (0 none, 1 transfer, 2 blob, 3 round)")
        }
        m = .error(code: code, message: message, subject: subject)
      case .counts:
        let vocabulary = try r.u32("vocabulary"), minimum = try r.u32("minimum")
        guard vocabulary >= 1, Int(vocabulary) * 4 == frames[2].count else {
          throw DecodeError.invalid("COUNTS of a vocabulary of \(vocabulary) tokens needs \(Int(vocabulary) * 4) payload octets, not \(frames[2].count)")
        }
        m = .counts(vocabulary: vocabulary, minimum: minimum, payload: frames[2])
      case .evaluation:
        let version = try r.u64("version"), hash = try r.raw(32, "version hash"), n = Int(try r.u8("language count"))
        guard n >= 1, n <= LanguageTokens.maxCount else { throw DecodeError.invalid("EVALUATION of \(n) languages (1 to \(LanguageTokens.maxCount))") }
        var scores: [LanguageScore] = []
        for _ in 0..<n {
          let s = LanguageScore(language: try r.string("language", max: LanguageTokens.maxName), bitsPerByte: Float(bitPattern: try r.u32("bits per byte")),
                                bytes: try r.u64("bytes"), alone: Float(bitPattern: try r.u32("alone")))
          try LanguageTokens.checkName(s.language, after: scores.last?.language)
          guard s.bitsPerByte.isFinite, s.bitsPerByte >= 0, s.bytes >= 1, s.alone.isNaN || (s.alone.isFinite && s.alone >= 0) else {
            throw DecodeError.invalid("score of \(s.language): bits per byte \(s.bitsPerByte) over \(s.bytes) bytes, alone \(s.alone) (finite, ≥ 0, at least one byte; alone NaN when none)")
          }
          scores.append(s)
        }
        m = .evaluation(version: version, hash: hash, scores: scores, signature: try r.raw(64, "signature"))
      case .secaggKeys, .secaggRoster, .secaggShares, .secaggUnmask, .secaggReveal:
        m = try Message.decodeSecureAggregation(type, &r, payload: frames.count == 3 ? frames[2] : nil)
      case .vocabulary:
        m = .vocabulary(remaining: try r.u16("remaining"), signature: try r.raw(64, "signature"), payload: frames[2])
      case .tokenizer:
        m = .tokenizer(hash: try r.raw(32, "tokenizer hash"), signature: try r.raw(64, "signature"), payload: frames[2])
      case .declaration:
        guard frames[2].count <= Wire.maxDeclaration else {
          throw DecodeError.tooLarge("declaration", value: frames[2].count, bound: Wire.maxDeclaration)
        }
        m = .declaration(hash: try r.raw(32, "declaration hash"), signature: try r.raw(64, "signature"), payload: frames[2])
      case .enrol:
        let token = try r.raw(InvitationWire.tokenSize, "token")
        let name = try r.string("name", max: 256), contact = try r.string("contact", max: 256)
        guard !name.isEmpty else { throw DecodeError.invalid("ENROL with an empty name") }
        m = .enrol(token: token, name: name, contact: contact, signKey: try r.raw(32, "sign key"), curveKey: try r.raw(32, "curve key"),
                   signature: try r.raw(64, "signature"))
      case .enrolled:
        m = .enrolled(node: try r.raw(32, "node id"), payload: frames[2])
      }
      try r.expectEnd()
      return m
    } catch let e as DecodeError {
      throw WireError.decode(e)
    }
  }
}

/// Why frames are not a valid message.
public enum WireError: Error, Equatable, CustomStringConvertible {
  case frameCount(Int)
  case notAgora
  case unsupportedVersion(UInt8)
  case emptyBody
  case unknownType(UInt8)
  case payloadFrame(type: MessageType, present: Bool)
  case decode(DecodeError)

  public var code: ErrorCode { isVersion ? .unsupportedVersion : .malformed }
  var isVersion: Bool { if case .unsupportedVersion = self { return true } else { return false } }

  public var description: String {
    switch self {
    case .frameCount(let n): return "\(n) frames; a message has 2 or 3"
    case .notAgora: return "the version frame is not \"AGR\" + version"
    case .unsupportedVersion(let v): return "protocol version \(v) is not supported (this build speaks \(Wire.protocolVersion))"
    case .emptyBody: return "empty body frame"
    case .unknownType(let t): return "unknown message type 0x\(String(t, radix: 16))"
    case .payloadFrame(let t, let present): return present ? "\(t) takes no payload frame" : "\(t) needs a payload frame"
    case .decode(let e): return "malformed body: \(e)"
    }
  }
}

extension Message {
  /// The 32 zero octets that stand for "no hash" in a hash field (no parent, no patch, no public shard).
  public static let noHash = [UInt8](repeating: 0, count: 32)
}
