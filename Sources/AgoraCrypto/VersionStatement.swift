import AgoraWire

/// What a version's signature covers:
///
///     "agora-version/1" ‖ federation (u16 length ‖ UTF-8) ‖ number (u64) ‖ weights hash (32) ‖ parent weights hash (32, zero for version 0)
///
/// Nodes check it (with the coordinator card's Ed25519 key) before training on a version; `agora verify`
/// checks it for every version and that the parents chain back to version 0.
public enum VersionStatement {
  public static func bytes(federation: String, number: UInt64, hash: [UInt8], parent: [UInt8]) -> [UInt8] {
    var w = ByteWriter()
    w.raw(Array("agora-version/1".utf8))
    w.string(federation)
    w.u64(number)
    w.raw(hash)
    w.raw(parent)
    return w.bytes
  }
}
