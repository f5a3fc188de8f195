import AgoraWire
import CZeroMQ
import Foundation

/// Socket settings, named with their sane ranges (after zguide's Paranoid Pirate).
public struct TransportSettings: Sendable {
  /// ZMTP heartbeat interval: any traffic counts, PINGs fill the gaps (100–5,000 ms is reasonable).
  public var heartbeatMillis: Int32 = 1000
  /// A peer silent this long is dropped (3–5 heartbeats).
  public var heartbeatTimeoutMillis: Int32 = 5000
  /// First reconnect delay; it doubles on each failure up to `reconnectMaxMillis`.
  public var reconnectMillis: Int32 = 100
  public var reconnectMaxMillis: Int32 = 32_000
  /// Largest message libzmq accepts; a larger one drops the connection before it is buffered.
  public var maxMessageBytes: Int64 = Int64(Wire.maxPayload + Wire.maxBody + 64)
  /// Queued messages per peer and direction before sending blocks or drops.
  public var highWaterMark: Int32 = 64
  /// Time a CURVE handshake may take.
  public var handshakeMillis: Int32 = 5000
  public init() {}
}

/// Something that arrived on an endpoint.
public struct Inbound: Sendable {
  /// The ROUTER routing id of the peer (empty on a DEALER).
  public var peer: [UInt8]
  /// The ZAP User-Id of the session: the node's fingerprint on the coordinator, empty on a node.
  public var userID: String
  public var message: Result<Message, WireError>

  /// A round's announcement (ROUND): the transfer loops leave it queued for the node's round loop.
  public var isRoundAnnouncement: Bool {
    if case .success(.round) = message { return true }
    return false
  }
}

/// A libzmq socket driven by its own thread: `send` may be called from any thread (it queues and wakes
/// the I/O thread through a pipe), and `receive(timeout:)` (blocking) or `next(timeout:)` (async) take what
/// arrives. At most `inboxLimit` messages wait; beyond that the I/O thread stops reading, so libzmq's
/// high-water marks push back on the senders and memory stays bounded.
public final class Endpoint: @unchecked Sendable {
  private let inbox = NSCondition()
  /// Taken slots are emptied at once (a taken message's payload must not outlive its use).
  private var queue: [Inbound?] = []
  private var head = 0
  public let inboxLimit = 256
  private let socket: ZMQSocket
  private let isRouter: Bool
  private let lock = NSLock()
  private var outbox: [(peer: [UInt8], frames: [[UInt8]], payload: Payload?)] = []
  private var wakeRead: Int32 = -1, wakeWrite: Int32 = -1
  private let stopFlag = ManagedAtomicFlag()
  private let finished = DispatchSemaphore(value: 0)
  public private(set) var boundEndpoint: String = ""
  /// Send buffers for outgoing chunks (sealed update chunks on a node, blob chunks on a coordinator), reused
  /// across transfers. A coordinator keeps few idle ones: its memory is budgeted per model, and its blob
  /// chunks come from the page cache anyway.
  public let buffers: BufferPool
  /// Messages dropped because a peer was gone, or its queue stayed full for `backlogSeconds` — for metrics and tests.
  public private(set) var dropped = 0
  /// Messages that found their peer's queue full (EAGAIN) wait here, in order per peer, and are sent again on the
  /// I/O thread's next turns: a burst (a WELCOME for each of many JOINs queued while the coordinator was busy)
  /// must not make the next message (a ROUND, announced once) vanish. Owned by the I/O thread.
  private var backlog: [(peer: [UInt8], frames: [[UInt8]], payload: Payload?, since: Date)] = []
  /// How long a message may wait for a full queue before it is dropped.
  public static let backlogSeconds: Double = 60
  private let divertLock = NSLock()
  private var divertHandler: (@Sendable (Inbound) -> Bool)?

  /// A handler that sees every inbound message first, on the endpoint's thread, and takes those it returns true
  /// for out of `receive`'s queue (e.g. a protocol phase that runs beside a transfer's own receive loop).
  public func divert(_ handler: (@Sendable (Inbound) -> Bool)?) { divertLock.withLock { divertHandler = handler } }

  /// A coordinator endpoint: ROUTER, CURVE server, bound to `endpoint`. Start the ZAP handler first.
  public static func server(bind endpoint: String, keys: CurveKeys, settings: TransportSettings = .init(),
                            context: ZMQContext = .shared) throws -> Endpoint {
    let s = try ZMQSocket(type: ZMQ_ROUTER, context: context)
    try s.set(ZMQ_CURVE_SERVER, Int32(1))
    try s.set(ZMQ_CURVE_SECRETKEY, bytes: keys.secretKey)
    try s.set(ZMQ_ZAP_DOMAIN, string: "agora")
    try s.set(ZMQ_ROUTER_MANDATORY, Int32(1))
    try configure(s, settings)
    try s.bind(endpoint)
    return try Endpoint(socket: s, router: true)
  }

  /// A node endpoint: DEALER, CURVE client of the server key, connecting (and reconnecting) to `endpoint`.
  public static func client(connect endpoint: String, serverKey: [UInt8], keys: CurveKeys, settings: TransportSettings = .init(),
                            context: ZMQContext = .shared) throws -> Endpoint {
    let s = try ZMQSocket(type: ZMQ_DEALER, context: context)
    try s.set(ZMQ_CURVE_SERVERKEY, bytes: serverKey)
    try s.set(ZMQ_CURVE_PUBLICKEY, bytes: keys.publicKey)
    try s.set(ZMQ_CURVE_SECRETKEY, bytes: keys.secretKey)
    try configure(s, settings)
    try s.connect(endpoint)
    return try Endpoint(socket: s, router: false)
  }

  static func configure(_ s: ZMQSocket, _ c: TransportSettings) throws {
    try s.set(ZMQ_HEARTBEAT_IVL, c.heartbeatMillis)
    try s.set(ZMQ_HEARTBEAT_TIMEOUT, c.heartbeatTimeoutMillis)
    try s.set(ZMQ_HEARTBEAT_TTL, c.heartbeatTimeoutMillis)
    try s.set(ZMQ_RECONNECT_IVL, c.reconnectMillis)
    try s.set(ZMQ_RECONNECT_IVL_MAX, c.reconnectMaxMillis)
    try s.set(ZMQ_MAXMSGSIZE, c.maxMessageBytes)
    try s.set(ZMQ_SNDHWM, c.highWaterMark)
    try s.set(ZMQ_RCVHWM, c.highWaterMark)
    try s.set(ZMQ_HANDSHAKE_IVL, c.handshakeMillis)
  }

  private init(socket: ZMQSocket, router: Bool) throws {
    MessageMemory.configure(coordinator: router)
    self.socket = socket
    self.isRouter = router
    buffers = BufferPool(keep: router ? 2 : 12)
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw ZMQError(function: "pipe", errno: errno) }
    wakeRead = fds[0]
    wakeWrite = fds[1]
    _ = fcntl(wakeRead, F_SETFL, O_NONBLOCK)
    _ = fcntl(wakeWrite, F_SETFL, O_NONBLOCK)
    boundEndpoint = socket.lastEndpoint
    let t = Thread { [self] in self.run() }
    t.name = router ? "agora-router" : "agora-dealer"
    t.start()
  }

  /// When each peer's last message arrived on a ROUTER (in the I/O thread, whether or not anyone has read it yet):
  /// a consumer busy for a while (a large model's step, a hash) must not take its peers for silent.
  private var arrivals: [[UInt8]: Date] = [:]
  private let arrivalLock = NSLock()
  private var arrivalsPruned = Date()

  /// When the last message from `peer` arrived (nil if none in the last two minutes, or not a ROUTER).
  public func lastArrival(from peer: [UInt8]) -> Date? {
    arrivalLock.lock(); defer { arrivalLock.unlock() }
    return arrivals[peer]
  }

  /// Queues a message (to `peer` on a ROUTER). Never blocks.
  /// A chunk's payload is not copied here (nor, if its memory has an owner, into libzmq).
  public func send(_ message: Message, to peer: [UInt8] = []) {
    let (frames, payload) = message.encoded()
    enqueue(peer, frames, payload)
  }

  /// Queues raw frames: for tests that send what no encoder would.
  public func sendFrames(_ frames: [[UInt8]], to peer: [UInt8] = []) {
    enqueue(peer, frames, nil)
  }

  private func enqueue(_ peer: [UInt8], _ frames: [[UInt8]], _ payload: Payload?) {
    lock.lock()
    outbox.append((peer, frames, payload))
    lock.unlock()
    var b: UInt8 = 1
    _ = write(wakeWrite, &b, 1)
  }

  /// Stops the I/O thread and closes the socket (pending outbound messages are dropped).
  public func close() {
    guard !stopFlag.isSet else { return }
    stopFlag.set()
    var b: UInt8 = 1
    _ = write(wakeWrite, &b, 1)
    finished.wait()
  }

  deinit {
    close()
    Darwin_close(wakeRead)
    Darwin_close(wakeWrite)
  }

  private func run() {
    defer {
      socket.close()
      inbox.lock(); inbox.broadcast(); inbox.unlock()
      finished.signal()
    }
    var drain = [UInt8](repeating: 0, count: 256)
    while !stopFlag.isSet {
      let (readable, woken): (Bool, Bool)
      do { (readable, woken) = try socket.poll(alsoFD: wakeRead, timeoutMillis: backlog.isEmpty ? 100 : 5) } catch { continue }
      if woken { while read(wakeRead, &drain, drain.count) > 0 {} }
      flushOutbox()
      if readable && pending >= inboxLimit { usleep(1000); continue }  // let the consumer catch up
      if readable {
        // Drain what is there, a bounded number at a time so sending keeps up.
        for _ in 0..<64 {
          guard let r = try? socket.receive(dontWait: true, maxFrames: isRouter ? 5 : 4) else { break }
          var frames = r.frames
          var peer: [UInt8] = []
          if isRouter, !frames.isEmpty {
            peer = frames.removeFirst().array
            let now = Date()
            arrivalLock.lock()
            arrivals[peer] = now
            // Peers gone for two minutes are forgotten (routing ids change with every connection).
            if now.timeIntervalSince(arrivalsPruned) > 30 {
              arrivals = arrivals.filter { now.timeIntervalSince($0.value) < 120 }
              arrivalsPruned = now
            }
            arrivalLock.unlock()
          }
          let result: Result<Message, WireError> = Result { try Message.decode(received: frames) }.mapError { $0 as! WireError }
          let inbound = Inbound(peer: peer, userID: r.userID, message: result)
          if let divert = divertLock.withLock({ divertHandler }), divert(inbound) { continue }
          inbox.lock()
          queue.append(inbound)
          inbox.broadcast()
          inbox.unlock()
        }
      }
    }
  }

  private var pending: Int {
    inbox.lock(); defer { inbox.unlock() }
    return queue[head...].reduce(0) { $0 + ($1 == nil ? 0 : 1) }
  }

  /// The next inbound message, waiting at most `timeout` seconds; nil on timeout or after `close`.
  public func receive(timeout: Double) -> Inbound? { receive(timeout: timeout, where: { _ in true }) }

  /// The first inbound message `accept` takes, waiting at most `timeout` seconds; the others stay queued in
  /// order for later calls (e.g. a round's announcement that arrives while an upload reads its acknowledgements).
  public func receive(timeout: Double, where accept: (Inbound) -> Bool) -> Inbound? {
    let deadline = Date(timeIntervalSinceNow: timeout)
    inbox.lock()
    defer { inbox.unlock() }
    var scanned = head
    while true {
      while scanned < queue.count {
        if let m = queue[scanned], accept(m) {
          queue[scanned] = nil
          while head < queue.count && queue[head] == nil { head += 1 }
          if head > 512 || head == queue.count { queue.removeFirst(head); head = 0 }
          // A message left queued at the head (a ROUND during an upload) keeps the taken slots behind it.
          if queue.count > 1024 { queue = queue[head...].filter { $0 != nil }; head = 0 }
          return m
        }
        scanned += 1
      }
      if stopFlag.isSet || !inbox.wait(until: deadline) { return nil }
      scanned = head  // another reader may have taken or compacted meanwhile
    }
  }

  /// `receive(timeout:)` without blocking the caller's executor.
  public func next(timeout: Double) async -> Inbound? {
    await withCheckedContinuation { c in
      DispatchQueue.global().async { c.resume(returning: self.receive(timeout: timeout)) }
    }
  }

  private func flushOutbox() {
    lock.lock()
    let batch = outbox
    outbox.removeAll(keepingCapacity: true)
    lock.unlock()
    // What waited first goes first; a peer whose queue is still full keeps the order of what follows for it.
    let waiting = backlog
    backlog.removeAll(keepingCapacity: true)
    var full: Set<[UInt8]> = []
    let now = Date()
    for m in waiting.map({ ($0.peer, $0.frames, $0.payload, $0.since) }) + batch.map({ ($0.peer, $0.frames, $0.payload, now) }) {
      let (peer, frames, payload, since) = m
      if full.contains(peer) { backlog.append((peer, frames, payload, since)); continue }
      do {
        try socket.send(isRouter ? [peer] + frames : frames, payload: payload, dontWait: true)
      } catch let e as ZMQError where e.errno == EAGAIN && now.timeIntervalSince(since) < Endpoint.backlogSeconds {
        // The peer's queue is full (high-water mark): keep it, and what follows for that peer, for the next turn.
        full.insert(peer)
        backlog.append((peer, frames, payload, since))
      } catch {
        // ROUTER_MANDATORY: the peer is gone (EHOSTUNREACH), or its queue stayed full too long.
        dropped += 1
      }
    }
  }
}

@inline(__always) func Darwin_close(_ fd: Int32) { if fd >= 0 { _ = Glibc.close(fd) } }
