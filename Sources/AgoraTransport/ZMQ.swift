import AgoraWire
import CZeroMQ
import Foundation

/// An error from a libzmq call: the function, errno and libzmq's message.
public struct ZMQError: Error, Equatable, CustomStringConvertible {
  public let function: String
  public let errno: Int32
  public var description: String { "libzmq \(function): \(String(cString: zmq_strerror(errno))) (errno \(errno))" }
  public var isTimeout: Bool { errno == EAGAIN }
}

/// The one funnel through which Agora calls libzmq: every return code becomes a `ZMQError` naming the
/// function, and EINTR is retried.
enum ZMQ {
  @inline(__always) static func call(_ fn: String, _ body: () -> Int32) throws {
    while true {
      if body() >= 0 { return }
      let e = zmq_errno()
      if e == EINTR { continue }
      throw ZMQError(function: fn, errno: e)
    }
  }
}

/// A libzmq context: its I/O threads serve its sockets, and `inproc://` endpoints (such as the ZAP
/// handler's) are private to it. Most programs use `shared`; a process hosting several coordinators (tests)
/// gives each its own, so their ZAP handlers do not collide.
public final class ZMQContext: @unchecked Sendable {
  public static let shared = ZMQContext(ioThreads: 2)
  let raw: UnsafeMutableRawPointer

  public init(ioThreads: Int32 = 1) {
    raw = zmq_ctx_new()
    _ = zmq_ctx_set(raw, ZMQ_IO_THREADS, ioThreads)
  }
}

/// A libzmq socket. It belongs to the thread that uses it (libzmq sockets are not thread-safe); the
/// `@unchecked Sendable` only lets it be handed to that thread once.
public final class ZMQSocket: @unchecked Sendable {
  let raw: UnsafeMutableRawPointer
  private(set) var closed = false

  public init(type: Int32, context: ZMQContext = .shared) throws {
    guard let s = zmq_socket(context.raw, type) else { throw ZMQError(function: "zmq_socket", errno: zmq_errno()) }
    raw = s
    try set(ZMQ_LINGER, Int32(0))
  }

  deinit { close() }

  public func close() {
    if !closed { zmq_close(raw); closed = true }
  }

  public func set(_ option: Int32, _ value: Int32) throws {
    var v = value
    try ZMQ.call("zmq_setsockopt(\(option))") { zmq_setsockopt(raw, option, &v, MemoryLayout<Int32>.size) }
  }

  public func set(_ option: Int32, _ value: Int64) throws {
    var v = value
    try ZMQ.call("zmq_setsockopt(\(option))") { zmq_setsockopt(raw, option, &v, MemoryLayout<Int64>.size) }
  }

  public func set(_ option: Int32, bytes: [UInt8]) throws {
    try ZMQ.call("zmq_setsockopt(\(option))") { zmq_setsockopt(raw, option, bytes, bytes.count) }
  }

  public func set(_ option: Int32, string: String) throws {
    try set(option, bytes: Array(string.utf8))
  }

  public func bind(_ endpoint: String) throws { try ZMQ.call("zmq_bind(\(endpoint))") { zmq_bind(raw, endpoint) } }
  public func connect(_ endpoint: String) throws { try ZMQ.call("zmq_connect(\(endpoint))") { zmq_connect(raw, endpoint) } }

  /// The endpoint actually bound (after binding to port 0, for example).
  public var lastEndpoint: String {
    var buf = [CChar](repeating: 0, count: 256)
    var len = buf.count
    _ = zmq_getsockopt(raw, ZMQ_LAST_ENDPOINT, &buf, &len)
    return String(cString: buf)
  }

  /// Sends frames as one multipart message. Throws `ZMQError` with EAGAIN when `dontWait` and the queue is full.
  public func send(_ frames: [[UInt8]], dontWait: Bool = false) throws {
    try send(frames, payload: nil, dontWait: dontWait)
  }

  /// Sends `frames` and then `payload` as the last frame of one multipart message. A payload in memory
  /// its owner keeps (`Payload.owner`) is handed to libzmq without a copy: libzmq holds a reference to the
  /// owner until its I/O thread is done with the bytes.
  public func send(_ frames: [[UInt8]], payload: Payload?, dontWait: Bool = false) throws {
    let last = frames.count - (payload == nil ? 1 : 0)
    for (i, f) in frames.enumerated() {
      var flags: Int32 = i < last ? ZMQ_SNDMORE : 0
      if dontWait { flags |= ZMQ_DONTWAIT }
      try ZMQ.call("zmq_send") { f.withUnsafeBytes { zmq_send(raw, $0.baseAddress, $0.count, flags) } }
    }
    guard let payload else { return }
    let flags: Int32 = dontWait ? ZMQ_DONTWAIT : 0
    guard let owner = payload.owner, owner.bytes.count > 0 else {
      try ZMQ.call("zmq_send") { payload.withUnsafeBytes { zmq_send(raw, $0.baseAddress, $0.count, flags) } }
      return
    }
    var msg = zmq_msg_t()
    let hint = Unmanaged<AnyObject>.passRetained(owner).toOpaque()
    let bytes = owner.bytes
    guard zmq_msg_init_data(&msg, UnsafeMutableRawPointer(mutating: bytes.baseAddress!), bytes.count, { _, hint in
      Unmanaged<AnyObject>.fromOpaque(hint!).release()
    }, hint) == 0 else {
      Unmanaged<AnyObject>.fromOpaque(hint).release()
      throw ZMQError(function: "zmq_msg_init_data", errno: zmq_errno())
    }
    do {
      try ZMQ.call("zmq_msg_send") { zmq_msg_send(&msg, raw, flags) }
    } catch {
      zmq_msg_close(&msg)  // libzmq did not take it: this releases the owner
      throw error
    }
  }

  /// A received multipart message and the ZAP user id of the peer that sent it (empty without ZAP).
  public struct Received {
    public var frames: [Payload]
    public var userID: String
  }

  /// Frames at least this large stay in libzmq's message (`ZMQMessage`) instead of being copied out.
  static let keepInPlace = 16 << 10

  /// Receives one multipart message. Waits at most the socket's ZMQ_RCVTIMEO (EAGAIN when it expires),
  /// or not at all with `dontWait`. At most `maxFrames` frames are kept; the rest are read and dropped.
  public func receive(dontWait: Bool = false, maxFrames: Int = 8) throws -> Received {
    var frames: [Payload] = []
    var userID = ""
    var more = true
    var count = 0
    while more {
      var msg = zmq_msg_t()
      zmq_msg_init(&msg)
      defer { zmq_msg_close(&msg) }
      try ZMQ.call("zmq_msg_recv") { zmq_msg_recv(&msg, raw, dontWait && count == 0 ? ZMQ_DONTWAIT : 0) }
      // Metadata rides on the frames that came from the wire (not on a ROUTER's routing-id frame).
      if userID.isEmpty, let p = zmq_msg_gets(&msg, "User-Id") { userID = String(cString: p) }
      more = zmq_msg_more(&msg) != 0
      if frames.count < maxFrames {
        let n = zmq_msg_size(&msg)
        if n >= ZMQSocket.keepInPlace {
          // Large: the message moves into an owner (what stays in `msg` is empty) and is closed with it.
          let owned = ZMQMessage()
          try ZMQ.call("zmq_msg_move") { zmq_msg_move(owned.msg, &msg) }
          frames.append(Payload(owned))
        } else {
          frames.append(Payload(Array(UnsafeRawBufferPointer(start: n == 0 ? nil : zmq_msg_data(&msg), count: n))))
        }
      }
      count += 1
    }
    if count > maxFrames { frames.append(Payload([])) }  // marks "too many frames" for the decoder
    return Received(frames: frames, userID: userID)
  }

  /// Waits up to `timeoutMillis` for this socket to be readable or `fd` to be readable.
  /// Returns (socket readable, fd readable).
  public func poll(alsoFD fd: Int32? = nil, timeoutMillis: Int) throws -> (Bool, Bool) {
    var items = [zmq_pollitem_t(socket: raw, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)]
    if let fd { items.append(zmq_pollitem_t(socket: nil, fd: fd, events: Int16(ZMQ_POLLIN), revents: 0)) }
    try ZMQ.call("zmq_poll") { zmq_poll(&items, Int32(items.count), timeoutMillis) }
    return (items[0].revents & Int16(ZMQ_POLLIN) != 0, items.count > 1 && items[1].revents & Int16(ZMQ_POLLIN) != 0)
  }
}

/// A received libzmq message kept as it is: its bytes are a payload without a copy, and closing it (when
/// the last reference goes, on whatever thread) gives the memory back to libzmq.
final class ZMQMessage: PayloadStorage, @unchecked Sendable {
  let msg = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)

  init() { zmq_msg_init(msg) }

  deinit {
    zmq_msg_close(msg)
    msg.deallocate()
  }

  var bytes: UnsafeRawBufferPointer {
    let n = zmq_msg_size(msg)
    return UnsafeRawBufferPointer(start: n == 0 ? nil : zmq_msg_data(msg), count: n)
  }
}

/// Keys as libzmq wants them: 32-byte binary CURVE keys.
public struct CurveKeys: Sendable {
  public var publicKey: [UInt8]
  public var secretKey: [UInt8]
  public init(publicKey: [UInt8], secretKey: [UInt8]) {
    self.publicKey = publicKey
    self.secretKey = secretKey
  }
}
