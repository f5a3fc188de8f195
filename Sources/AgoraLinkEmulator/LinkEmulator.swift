#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Wide-area links between network namespaces, emulated in user space (what `tc netem` does in the kernel, for
/// kernels built without it): every party gets a TUN interface (moved into its namespace by the caller), and
/// each IPv4 packet a party sends crosses its own link's uplink (rate, one-way delay, loss, a drop-tail queue)
/// and then the receiver's downlink, as through a switch in the middle. Packets to addresses of no link, and
/// anything that is not IPv4, are dropped: the emulator forwards only between the parties it was given.
///
/// One thread drives every link with `poll`; a link's packets leave in order, each after the one before it
/// has been serialised at the link's rate, and arrive a fixed delay later.
public final class LinkEmulator {
  /// One party's link to the middle.
  public struct Link: Equatable, Sendable {
    public var name: String
    /// The party's IPv4 address (host order), on its TUN interface.
    public var address: UInt32
    /// Bits per second each way; nil: no rate limit (and no queue).
    public var rate: Double?
    /// One-way delay each way, in seconds (half the round-trip time to the middle).
    public var delay: Double
    /// Probability that a packet is lost, each way.
    public var loss: Double

    public init(name: String, address: UInt32, rate: Double?, delay: Double, loss: Double) {
      self.name = name
      self.address = address
      self.rate = rate
      self.delay = delay
      self.loss = loss
    }

    /// Parses `NAME=ADDRESS,RATE,RTT_MS,LOSS_PERCENT` (RATE like 1gbit, 100mbit, 512kbit, or `none`).
    public init(parsing spec: String) throws {
      guard let eq = spec.firstIndex(of: "=") else { throw LinkEmulatorError.spec(spec, "expected NAME=ADDRESS,RATE,RTT_MS,LOSS_PERCENT") }
      let name = String(spec[..<eq])
      let parts = spec[spec.index(after: eq)...].split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
      guard !name.isEmpty, parts.count == 4 else { throw LinkEmulatorError.spec(spec, "expected NAME=ADDRESS,RATE,RTT_MS,LOSS_PERCENT") }
      guard let address = LinkEmulator.ipv4(parts[0]) else { throw LinkEmulatorError.spec(spec, "\(parts[0]) is not an IPv4 address") }
      guard let rtt = Double(parts[2]), rtt >= 0, rtt <= 10_000 else { throw LinkEmulatorError.spec(spec, "RTT \(parts[2]) is not 0 … 10000 ms") }
      guard let loss = Double(parts[3]), loss >= 0, loss < 100 else { throw LinkEmulatorError.spec(spec, "loss \(parts[3]) is not 0 … <100 %") }
      self.init(name: name, address: address, rate: try LinkEmulator.rate(parts[1]), delay: rtt / 2000, loss: loss / 100)
    }
  }

  /// What crossed one link (both directions).
  public struct Counters: Equatable, Sendable {
    public var upPackets = 0, upBytes = 0, downPackets = 0, downBytes = 0
    public var lost = 0, queueDrops = 0, unroutable = 0
    /// Dropped while the link was cut (`outageFile`).
    public var cut = 0
  }

  /// While this file exists, the links it names (one name per line) are cut: every packet from or to them is
  /// dropped, as in an outage. Checked every 100 ms.
  public var outageFile: String?
  private var outage: Set<Int> = []
  private var outageChecked = 0.0

  public let links: [Link]
  /// The TUN interfaces' names, one per link, in order.
  public let interfaces: [String]
  private var fds: [Int32]
  private var counters: [Counters]
  private var random: UInt64
  /// Per link: packets on the uplink (to the middle) and on the downlink (to the party), each with the time
  /// it reaches the end of that hop; and when the last packet finished serialising on each hop.
  private var up: [Queue], down: [Queue]
  private var upFree: [Double], downFree: [Double]

  struct Packet { var bytes: [UInt8]; var due: Double }
  struct Queue {
    var items: [Packet] = []
    var head = 0
    var first: Packet? { head < items.count ? items[head] : nil }
    mutating func append(_ p: Packet) { items.append(p) }
    mutating func removeFirst() -> Packet {
      let p = items[head]
      head += 1
      if head > 1024 && head * 2 > items.count { items.removeFirst(head); head = 0 }
      return p
    }
  }

  /// Creates one TUN interface per link, named `prefix` + index (at most 15 characters).
  public init(links: [Link], interfacePrefix prefix: String, seed: UInt64 = 1) throws {
    guard !links.isEmpty else { throw LinkEmulatorError.spec("", "no links") }
    guard Set(links.map(\.address)).count == links.count else { throw LinkEmulatorError.spec("", "two links have the same address") }
    self.links = links
    interfaces = links.indices.map { prefix + String($0) }
    guard interfaces.allSatisfy({ $0.utf8.count <= 15 }) else { throw LinkEmulatorError.spec(prefix, "interface names are at most 15 characters") }
    fds = []
    counters = Array(repeating: Counters(), count: links.count)
    random = seed
    up = Array(repeating: Queue(), count: links.count)
    down = Array(repeating: Queue(), count: links.count)
    upFree = Array(repeating: 0, count: links.count)
    downFree = Array(repeating: 0, count: links.count)
    do {
      for name in interfaces { fds.append(try LinkEmulator.openTUN(name)) }
    } catch {
      for fd in fds { close(fd) }
      throw error
    }
  }

  deinit { for fd in fds { close(fd) } }

  public var stats: [Counters] { counters }

  /// Forwards packets until `stop` says so (checked at least every 100 ms).
  public func run(stop: () -> Bool) {
    var pfds = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while !stop() {
      let now = LinkEmulator.now()
      if let f = outageFile, now - outageChecked >= 0.1 {
        outageChecked = now
        let named = Set(((try? String(contentsOfFile: f, encoding: .utf8)) ?? "").split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) })
        outage = Set(links.indices.filter { named.contains(links[$0].name) })
      }
      deliver(now: now)
      var next = now + 0.1
      for i in links.indices {
        if let p = up[i].first { next = min(next, p.due) }
        if let p = down[i].first { next = min(next, p.due) }
      }
      let waitMs = Int32(max(0, min(100, ((next - LinkEmulator.now()) * 1000).rounded(.up))))
      guard poll(&pfds, nfds_t(pfds.count), waitMs) > 0 else { continue }
      let t = LinkEmulator.now()
      for i in pfds.indices where pfds[i].revents & Int16(POLLIN) != 0 {
        // At most 256 packets per link per pass, so that one busy link cannot starve the others.
        for _ in 0..<256 {
          let n = read(pfds[i].fd, &buffer, buffer.count)
          guard n > 0 else { break }
          send(from: i, Array(buffer[0..<n]), at: t)
        }
      }
    }
  }

  /// A packet party `i` sent at time `t`: onto its uplink (or lost, or dropped by a full queue).
  func send(from i: Int, _ bytes: [UInt8], at t: Double) {
    guard bytes.count >= 20, bytes[0] >> 4 == 4 else { counters[i].unroutable += 1; return }
    guard !outage.contains(i) else { counters[i].cut += 1; return }
    guard let departs = hop(link: i, free: &upFree[i], bytes: bytes.count, at: t) else { return }
    counters[i].upPackets += 1
    counters[i].upBytes += bytes.count
    up[i].append(Packet(bytes: bytes, due: departs + links[i].delay))
  }

  /// Serialises a packet on a hop of link `i`: when it has left (nil: lost, or the queue is full).
  func hop(link i: Int, free: inout Double, bytes: Int, at t: Double) -> Double? {
    let l = links[i]
    if l.loss > 0 && uniform() < l.loss { counters[i].lost += 1; return nil }
    guard let rate = l.rate else { return t }
    let start = max(t, free)
    // A drop-tail queue of max(64 packets of 1500 octets, 100 ms at the link's rate).
    let limit = max(64 * 1500 * 8 / rate, 0.1)
    if start - t > limit { counters[i].queueDrops += 1; return nil }
    free = start + Double(bytes * 8) / rate
    return free
  }

  /// Moves packets that reached the middle onto their receivers' downlinks, and hands packets that crossed
  /// their downlinks to the receivers.
  func deliver(now: Double) {
    for i in links.indices {
      while let p = up[i].first, p.due <= now {
        _ = up[i].removeFirst()
        let dst = UInt32(p.bytes[16]) << 24 | UInt32(p.bytes[17]) << 16 | UInt32(p.bytes[18]) << 8 | UInt32(p.bytes[19])
        guard let j = links.firstIndex(where: { $0.address == dst }), j != i else { counters[i].unroutable += 1; continue }
        guard !outage.contains(j) else { counters[j].cut += 1; continue }
        // The downlink takes the packet when it reached the middle (its due time), not when this loop saw it.
        guard let departs = hop(link: j, free: &downFree[j], bytes: p.bytes.count, at: p.due) else { continue }
        down[j].append(Packet(bytes: p.bytes, due: departs + links[j].delay))
      }
    }
    for j in links.indices {
      while let p = down[j].first, p.due <= now {
        _ = down[j].removeFirst()
        let written = p.bytes.withUnsafeBytes { write(fds[j], $0.baseAddress, $0.count) }
        if written == p.bytes.count {
          counters[j].downPackets += 1
          counters[j].downBytes += p.bytes.count
        } else {
          counters[j].queueDrops += 1
        }
      }
    }
  }

  /// Uniform in [0, 1) from SplitMix64.
  func uniform() -> Double {
    random &+= 0x9E37_79B9_7F4A_7C15
    var z = random
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return Double((z ^ (z >> 31)) >> 11) * 0x1p-53
  }

  static func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
  }

  /// A non-blocking TUN interface (IFF_TUN | IFF_NO_PI: whole IP packets, no extra header).
  static func openTUN(_ name: String) throws -> Int32 {
    let fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { throw LinkEmulatorError.system("open /dev/net/tun", errno) }
    var ifr = ifreq()
    withUnsafeMutableBytes(of: &ifr.ifr_ifrn.ifrn_name) { b in for (k, c) in name.utf8.enumerated() { b[k] = c } }
    ifr.ifr_ifru.ifru_flags = Int16(0x0001 | 0x1000)  // IFF_TUN | IFF_NO_PI (linux/if_tun.h)
    let tunsetiff: UInt = 0x4004_54CA                  // _IOW('T', 202, int)
    guard ioctl(fd, tunsetiff, &ifr) == 0 else {
      let e = errno
      close(fd)
      throw LinkEmulatorError.system("TUNSETIFF \(name)", e)
    }
    return fd
  }

  /// "1gbit", "100mbit", "512kbit", "2000000bit" → bits per second; "none" → nil.
  static func rate(_ s: String) throws -> Double? {
    let t = s.lowercased()
    if t == "none" { return nil }
    for (suffix, scale) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)] where t.hasSuffix(suffix) {
      if let v = Double(t.dropLast(suffix.count)), v > 0, v * scale >= 8_000, v * scale <= 1e11 { return v * scale }
    }
    throw LinkEmulatorError.spec(s, "a rate is like 1gbit, 100mbit, 512kbit (8 kbit/s … 100 Gbit/s) or none")
  }

  /// "10.77.0.1" → host-order address.
  public static func ipv4(_ s: String) -> UInt32? {
    let parts = s.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 4 else { return nil }
    var a: UInt32 = 0
    for p in parts {
      guard let v = UInt8(p) else { return nil }
      a = a << 8 | UInt32(v)
    }
    return a
  }
}

public enum LinkEmulatorError: Error, Equatable, CustomStringConvertible {
  case spec(String, String)
  case system(String, Int32)
  public var description: String {
    switch self {
    case .spec(let s, let why): return s.isEmpty ? "link emulator: \(why)" : "link emulator: '\(s)': \(why)"
    case .system(let what, let e): return "link emulator: \(what) failed: \(String(cString: strerror(e)))"
    }
  }
}
