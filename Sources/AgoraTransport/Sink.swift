import AgoraWire
import CZeroMQ
import Foundation

/// Plain libzmq reference for the transport benchmark: a ROUTER that receives `count` messages of raw
/// bytes (no Agora framing, no envelope) and answers the last one, optionally with CURVE (no ZAP).
public enum PlainSink {
  /// Binds, prints nothing, and returns (bound endpoint, a function that serves until done).
  public static func serve(bind: String, curveSecret: [UInt8]?, count: Int) throws -> (String, () throws -> Void) {
    let s = try ZMQSocket(type: ZMQ_ROUTER)
    if let sk = curveSecret {
      try s.set(ZMQ_CURVE_SERVER, Int32(1))
      try s.set(ZMQ_CURVE_SECRETKEY, bytes: sk)
    }
    try s.set(ZMQ_RCVHWM, Int32(64))
    try s.bind(bind)
    let endpoint = s.lastEndpoint
    return (endpoint, {
      try s.set(ZMQ_RCVTIMEO, Int32(30_000))
      var got = 0
      var peer: [UInt8] = []
      while got < count {
        let r = try s.receive(maxFrames: 2)
        peer = r.frames[0].array
        got += 1
      }
      try s.send([peer, [1]])
      usleep(100_000)  // let the reply leave before the socket closes
      s.close()
    })
  }

  /// Sends `count` messages of `size` bytes to a sink and waits for its answer.
  public static func send(connect: String, serverKey: [UInt8]?, keys: CurveKeys?, count: Int, size: Int) throws {
    let s = try ZMQSocket(type: ZMQ_DEALER)
    if let serverKey, let keys {
      try s.set(ZMQ_CURVE_SERVERKEY, bytes: serverKey)
      try s.set(ZMQ_CURVE_PUBLICKEY, bytes: keys.publicKey)
      try s.set(ZMQ_CURVE_SECRETKEY, bytes: keys.secretKey)
    }
    try s.set(ZMQ_SNDHWM, Int32(64))
    try s.set(ZMQ_RCVTIMEO, Int32(30_000))
    try s.connect(connect)
    let block = [UInt8](repeating: 0x5A, count: size)
    for _ in 0..<count { try s.send([block]) }
    _ = try s.receive()
    s.close()
  }
}
