import CZeroMQ

/// Facts about the linked libzmq. The transport itself (sockets, CURVE, ZAP) is built on this module.
public enum ZeroMQ {
  public static var version: (major: Int, minor: Int, patch: Int) {
    var a: Int32 = 0, b: Int32 = 0, c: Int32 = 0
    zmq_version(&a, &b, &c)
    return (Int(a), Int(b), Int(c))
  }

  /// Whether libzmq was built with CURVE security (libsodium or tweetnacl).
  public static var hasCurve: Bool { zmq_has("curve") == 1 }
}
