import AgoraCrypto
import CSodium
import AgoraTestSupport
import AgoraWire
import Foundation
import Testing

/// The files in Protocol/vectors: what the code writes, and what an outside implementation checks itself against.
@Suite struct VectorTests {
  func json(_ name: String) throws -> [String: Any] {
    let d = try Data(contentsOf: URL(fileURLWithPath: repoRoot + "/Protocol/vectors/" + name))
    return try JSONSerialization.jsonObject(with: d) as! [String: Any]
  }

  @Test func everyMessageVectorDecodesAndReencodes() throws {
    let list = try json("messages.json")["messages"] as! [[String: Any]]
    #expect(Set(list.map { $0["type"] as! Int }) == Set(MessageType.allCases.map { Int($0.rawValue) }), "a vector for every message type")
    for v in list {
      let frames = (v["frames"] as! [String]).map { unhex($0)! }
      let m = try Message.decode(frames)
      #expect(Int(m.type.rawValue) == v["type"] as! Int)
      #expect(m.frames() == frames, "\(v["name"]!) does not re-encode to its vector")
    }
  }

  /// VOCABULARY and TOKENIZER vectors are what the SPEC's text says (issue 31, C2): the table opens from the sealed
  /// box with the coordinator's aggregation key and its signature verifies with the node's key; the tokenizer's
  /// hash field is BLAKE2b-256 of its payload and the coordinator's signature verifies.
  @Test func vocabularyAndTokenizerVectorsFollowTheText() throws {
    let list = try json("messages.json")["messages"] as! [[String: Any]]
    func vector(_ name: String) throws -> (Message, [String: String]) {
      let v = try #require(list.first { $0["name"] as? String == name })
      return (try Message.decode((v["frames"] as! [String]).map { unhex($0)! }), v["inputs"] as! [String: String])
    }
    let (voc, vin) = try vector("vocabulary")
    guard case .vocabulary(_, let signature, let payload) = voc else { Issue.record("not VOCABULARY"); return }
    let box = try Sodium.boxKeypair(seed: unhex(vin["coordinator_box_seed"]!)!)
    let table = try Sodium.sealOpen(payload.array, publicKey: box.publicKey, secretKey: box.secretKey)
    #expect(hex(table) == vin["table"] && table.starts(with: Array("AGVC".utf8)))
    let node = try Sodium.signKeypair(seed: unhex(vin["node_sign_seed"]!)!)
    #expect(Sodium.verify(signature, message: VocabularyStatement.table(federation: vin["federation"]!, table: table), publicKey: node.publicKey))
    #expect(try Sodium.seal(table, to: box.publicKey, ephemeralSeed: unhex(vin["ephemeral_seed"]!)!) == payload.array, "the box is crypto_box_seal's from that seed")
    let (tok, tin) = try vector("tokenizer")
    guard case .tokenizer(let hash, let tsig, let json) = tok else { Issue.record("not TOKENIZER"); return }
    #expect(hash == Sodium.blake2b(json.array))
    let coordinator = try Sodium.signKeypair(seed: unhex(tin["coordinator_sign_seed"]!)!)
    #expect(Sodium.verify(tsig, message: VocabularyStatement.tokenizer(federation: tin["federation"]!, hash: hash), publicKey: coordinator.publicKey))
  }

  @Test func vectorFilesAreWhatTheCodeWrites() throws {
    let onDisk = try String(contentsOfFile: repoRoot + "/Protocol/vectors/messages.json", encoding: .utf8)
    #expect(onDisk == ProtocolVectors.messagesJSON())
    let env = try String(contentsOfFile: repoRoot + "/Protocol/vectors/envelope.json", encoding: .utf8)
    #expect(env == (try ProtocolVectors.envelopeJSON()))
  }

  /// Every malformed vector is refused with exactly the error (and ERROR code) it lists; the file is what the code writes.
  @Test func malformedVectorsGiveTheirErrors() throws {
    let list = try json("malformed.json")["messages"] as! [[String: Any]]
    #expect(list.count == ProtocolVectors.malformed.count && list.count >= 20)
    for v in list {
      let frames = (v["frames"] as! [String]).map { unhex($0)! }
      #expect { _ = try Message.decode(frames) } throws: { e in
        guard let w = e as? WireError else { return false }
        return w.description == v["error"] as! String && Int(w.code.rawValue) == v["error_code"] as! Int
      }
    }
    #expect(try String(contentsOfFile: repoRoot + "/Protocol/vectors/malformed.json", encoding: .utf8) == ProtocolVectors.malformedJSON())
    #expect(try String(contentsOfFile: repoRoot + "/Protocol/vectors/statement.json", encoding: .utf8) == (try ProtocolVectors.statementJSON()))
  }

  /// The version statement vector: the statement is the documented concatenation and its signature verifies.
  @Test func statementVectorVerifies() throws {
    let v = try json("statement.json")
    let keys = try Sodium.signKeypair(seed: unhex(v["coordinator_sign_seed"] as! String)!)
    #expect(hex(keys.publicKey) == v["coordinator_sign_public"] as! String)
    var w = ByteWriter()
    w.raw(Array("agora-version/1".utf8)); w.string(v["federation"] as! String); w.u64(UInt64(v["number"] as! Int))
    w.raw(unhex(v["hash"] as! String)!); w.raw(unhex(v["parent"] as! String)!)
    #expect(hex(w.bytes) == v["statement"] as! String)
    #expect(Sodium.verify(unhex(v["signature"] as! String)!, message: w.bytes, publicKey: keys.publicKey))
  }

  @Test func envelopeVectorOpensWithTheFixedKeys() throws {
    let v = try json("envelope.json")
    let coord = try Sodium.boxKeypair(seed: unhex(v["coordinator_box_seed"] as! String)!)
    let node = try Sodium.signKeypair(seed: unhex(v["node_sign_seed"] as! String)!)
    #expect(hex(coord.publicKey) == v["coordinator_box_public"] as! String)
    let ctx = Envelope.Context(federation: v["federation"] as! String, round: UInt64(v["round"] as! Int),
                               baseHash: unhex(v["base_hash"] as! String)!, nodeID: unhex(v["node_id"] as! String)!)
    let o = try EnvelopeOpener(headBytes: unhex(v["head"] as! String)!, expected: ctx, aggregationPublicKey: coord.publicKey,
                               aggregationSecretKey: coord.secretKey, sessionNodeID: nil) { $0 == ctx.nodeID ? node.publicKey : nil }
    var payload: [UInt8] = []
    for c in v["chunks"] as! [String] { payload += try o.open(unhex(c)!) }
    try o.finish(unhex(v["final"] as! String)!)
    #expect(payload == (0..<2500).map { UInt8(truncatingIfNeeded: $0) })
  }

  /// Suite 1 of the envelope vector opens with the fixed keys, and each of its messages is, octet for octet,
  /// what libsodium's own AES-256-GCM (another implementation than OpenSSL's) makes of [tag] ‖ chunk under the
  /// stream key, the SPEC's counter nonce and the head's hash.
  @Test func theAESGCMEnvelopeVectorIsLibsodiumsAESGCMOfEachChunk() throws {
    let all = try json("envelope.json")
    let v = all["aes256gcm"] as! [String: Any]
    let coord = try Sodium.boxKeypair(seed: unhex(all["coordinator_box_seed"] as! String)!)
    let node = try Sodium.signKeypair(seed: unhex(all["node_sign_seed"] as! String)!)
    let ctx = Envelope.Context(federation: all["federation"] as! String, round: UInt64(all["round"] as! Int),
                               baseHash: unhex(all["base_hash"] as! String)!, nodeID: unhex(all["node_id"] as! String)!)
    let head = unhex(v["head"] as! String)!
    #expect(head[4] == 5 && head[5] == 1, "head version 5, suite 1")
    let o = try EnvelopeOpener(headBytes: head, expected: ctx, aggregationPublicKey: coord.publicKey,
                               aggregationSecretKey: coord.secretKey, sessionNodeID: nil) { $0 == ctx.nodeID ? node.publicKey : nil }
    #expect(o.head.suite == .aes256gcm)
    let chunks = (v["chunks"] as! [String]).map { unhex($0)! }
    var payload: [UInt8] = []
    for c in chunks { payload += try o.open(c) }
    let final = unhex(v["final"] as! String)!
    try o.finish(final)
    #expect(payload == (0..<2500).map { UInt8(truncatingIfNeeded: $0) })

    try #require(crypto_aead_aes256gcm_is_available() == 1, "libsodium's AES-256-GCM needs AES-NI and PCLMULQDQ")
    let key = unhex(all["stream_key"] as! String)!
    let ad = unhex(v["head_hash"] as! String)!
    #expect(ad == SHA256.hash(head))
    let nonces = (v["nonces"] as! [String]).map { unhex($0)! }
    #expect(nonces.count == chunks.count + 1 && nonces.allSatisfy { $0.count == 12 })
    let pull = try GCMStreamPull(key: key)
    for c in chunks { _ = try pull.pull(c, ad: ad) }
    let (signature, isFinal) = try pull.pull(final, ad: ad)
    #expect(isFinal && signature.count == 64)
    let plains = (0..<chunks.count).map { [SecretStream.tagMessage] + Array(payload[(1024 * $0)..<min(payload.count, 1024 * ($0 + 1))]) }
      + [[SecretStream.tagFinal] + signature]
    for (i, (plain, sealed)) in zip(plains, chunks + [final]).enumerated() {
      var out = [UInt8](repeating: 0, count: plain.count + 16)
      var outLen: UInt64 = 0
      #expect(crypto_aead_aes256gcm_encrypt(&out, &outLen, plain, UInt64(plain.count), ad, UInt64(ad.count), nil, nonces[i], key) == 0)
      #expect(out == sealed, "message \(i) is AES-256-GCM(K, nonce_\(i), H; [tag] ‖ m)")
    }
  }
}
