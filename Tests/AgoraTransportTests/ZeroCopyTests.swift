import AgoraCrypto
import AgoraTestSupport
@testable import AgoraTransport
import AgoraWire
import CZeroMQ
import Foundation
import Testing

/// Chunks cross libzmq without copies: a pooled send buffer is read by libzmq in place and comes back to its
/// pool only once libzmq has let go of it; a large received frame stays in libzmq's message.
@Suite struct ZeroCopyTests {
  /// A DEALER/ROUTER pair over 127.0.0.1 with its own context.
  func pair(curve: Bool = false) throws -> (ZMQContext, ZMQSocket, ZMQSocket) {
    let context = ZMQContext(ioThreads: 1)
    let router = try ZMQSocket(type: ZMQ_ROUTER, context: context)
    let server = try Sodium.boxKeypair(), client = try Sodium.boxKeypair()
    if curve {
      try router.set(ZMQ_CURVE_SERVER, Int32(1))
      try router.set(ZMQ_CURVE_SECRETKEY, bytes: server.secretKey)
    }
    try router.set(ZMQ_RCVTIMEO, Int32(5000))
    try router.bind("tcp://127.0.0.1:*")
    let dealer = try ZMQSocket(type: ZMQ_DEALER, context: context)
    if curve {
      try dealer.set(ZMQ_CURVE_SERVERKEY, bytes: server.publicKey)
      try dealer.set(ZMQ_CURVE_PUBLICKEY, bytes: client.publicKey)
      try dealer.set(ZMQ_CURVE_SECRETKEY, bytes: client.secretKey)
    }
    try dealer.set(ZMQ_RCVTIMEO, Int32(5000))
    try dealer.connect(router.lastEndpoint)
    return (context, router, dealer)
  }

  @Test(arguments: [false, true])
  func pooledPayloadTravelsAndReturnsToItsPool(curve: Bool) throws {
    let (_, router, dealer) = try pair(curve: curve)
    defer { router.close(); dealer.close() }
    let pool = BufferPool(keep: 4)
    let size = (1 << 20) + 17
    var sent: [[UInt8]] = []
    // Three distinct buffers (taken one at a time, a buffer libzmq had already released would come back).
    var bufs = (0..<3).map { _ in pool.take(size) }
    for (k, buf) in bufs.enumerated() {
      for i in 0..<size { buf.mutableBytes[i] = UInt8(truncatingIfNeeded: i &* 7 &+ k) }
      sent.append(Array(buf.bytes))
      try dealer.send([[0xAB]], payload: Payload(buf))
    }
    bufs.removeAll()
    for k in 0..<3 {
      let r = try router.receive(maxFrames: 4)
      #expect(r.frames.count == 3)
      #expect(r.frames[1].array == [0xAB])
      // Kept in libzmq's message, not copied out; the bytes are the ones sealed into the buffer.
      #expect(r.frames[2].owner is ZMQMessage)
      #expect(r.frames[2] == Payload(sent[k]))
    }
    // libzmq's I/O thread releases each buffer once it is done with it (without CURVE, the message written
    // last may stay referenced until another one is loaded, or the socket closes): all three come back.
    dealer.close()
    waitUntil(5, every: 0.002) { pool.idle >= 3 }
    #expect(pool.idle == 3)
    // A buffer taken again is one of them (no new memory while the pool has one of that size).
    let again = pool.take(size)
    #expect(pool.idle == 2)
    _ = again
  }

  @Test func smallFramesAreCopiedAndAPoolKeepsAtMostItsLimit() throws {
    let (_, router, dealer) = try pair()
    defer { router.close(); dealer.close() }
    try dealer.send([[1, 2, 3]], payload: Payload([4, 5, 6]))
    let r = try router.receive(maxFrames: 4)
    #expect(r.frames[1].owner == nil && r.frames[2].owner == nil)
    #expect(r.frames[2].array == [4, 5, 6])
    let pool = BufferPool(keep: 2)
    var held = (0..<5).map { _ in pool.take(4096) }
    held.removeAll()
    #expect(pool.idle == 2)
  }

  /// The allocator settings for megabyte messages are in effect on glibc (an endpoint applies them; the first
  /// call in a process decides).
  @Test func messageMemorySettingsApply() {
    #if os(Linux)
    #expect(MessageMemory.configure(coordinator: false))
    #expect(MessageMemory.configure(coordinator: true))
    #endif
  }

  @Test func payloadEqualityIsByBytes() {
    let pool = BufferPool()
    let b = pool.take(3)
    b.mutableBytes.copyBytes(from: [7, 8, 9])
    #expect(Payload(b) == Payload([7, 8, 9]))
    #expect(Payload(b) != Payload([7, 8]))
    #expect(Payload(b).array == [7, 8, 9] && Payload(b).count == 3)
  }
}
