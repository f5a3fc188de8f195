/// What the vocabulary phase's signatures cover (SPEC §4.4).
public enum VocabularyStatement {
  /// A node's table: "AGORA-VOCAB-v1" ‖ u8 length ‖ federation ‖ BLAKE2b-256(table).
  public static func table(federation: String, table: [UInt8]) -> [UInt8] {
    Array("AGORA-VOCAB-v1".utf8) + [UInt8(federation.utf8.count)] + Array(federation.utf8) + Sodium.blake2b(table)
  }

  /// The coordinator's tokenizer: "AGORA-TOKENIZER-v1" ‖ u8 length ‖ federation ‖ its BLAKE2b-256.
  public static func tokenizer(federation: String, hash: [UInt8]) -> [UInt8] {
    Array("AGORA-TOKENIZER-v1".utf8) + [UInt8(federation.utf8.count)] + Array(federation.utf8) + hash
  }

  /// The payload of a node that holds no text (a compute donor): it asks for the tokenizer, contributing none.
  public static let noText: [UInt8] = Array("AGV0".utf8)
}

/// What a declaration of training data's signature covers (SPEC §4.5): "AGORA-DECLARATION-v1" ‖ u8 length ‖
/// federation ‖ BLAKE2b-256(the declaration's JSON).
public enum DeclarationStatement {
  public static func bytes(federation: String, payload: [UInt8]) -> [UInt8] {
    Array("AGORA-DECLARATION-v1".utf8) + [UInt8(federation.utf8.count)] + Array(federation.utf8) + Sodium.blake2b(payload)
  }
}
