import CMPI
import Foundation

/// The processes of one node when it runs under `mpirun -np K` (Open MPI): K ranks that train synchronously
/// data-parallel inside the institution — each inner step's gradients are summed with `MPI_Allreduce` — while
/// only rank 0 speaks to the coordinator. MPI is the engine; nothing here is a home-made collective.
///
/// All calls are collective: every rank must make the same calls in the same order. Rank 0 leads (it decides
/// when a round starts and how many steps it has) and tells the others with `broadcast`.
public final class Cluster: @unchecked Sendable {
  public let rank: Int
  public let size: Int
  public var isLeader: Bool { rank == 0 }
  /// Seconds spent in all-reduces (the communication a step costs), and how many.
  public private(set) var allreduceSeconds = 0.0
  public private(set) var allreduces = 0

  private static let lock = NSLock()
  nonisolated(unsafe) private static var shared: Cluster?

  /// The cluster this process belongs to when it was started by `mpirun` (Open MPI sets OMPI_COMM_WORLD_SIZE);
  /// nil for a plain process. MPI is initialised once, on first use.
  public static func fromEnvironment() throws -> Cluster? {
    guard let s = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"], let n = Int(s), n > 1 else { return nil }
    lock.lock(); defer { lock.unlock() }
    if let c = shared { return c }
    var provided: Int32 = 0
    // Only the thread that initialised MPI calls it (the node's training thread).
    guard MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided) == MPI_SUCCESS else { throw ClusterError.mpi("MPI_Init_thread") }
    var rank: Int32 = 0, size: Int32 = 0
    MPI_Comm_rank(agora_mpi_comm_world(), &rank)
    MPI_Comm_size(agora_mpi_comm_world(), &size)
    let c = Cluster(rank: Int(rank), size: Int(size))
    shared = c
    atexit { Cluster.finish() }
    return c
  }

  init(rank: Int, size: Int) {
    self.rank = rank
    self.size = size
  }

  /// MPI_Finalize, once (at exit).
  public static func finish() {
    lock.lock(); defer { lock.unlock() }
    guard shared != nil else { return }
    shared = nil
    var done: Int32 = 0
    MPI_Finalized(&done)
    if done == 0 { MPI_Finalize() }
  }

  /// Sums `x` over the ranks, in place (every rank gets the sum).
  public func allreduceSum(_ x: UnsafeMutableBufferPointer<Float>) throws {
    let t = Date()
    var off = 0
    // MPI counts are Int32: large buffers go in pieces.
    while off < x.count {
      let n = min(x.count - off, Int(Int32.max / 2))
      let r = MPI_Allreduce(agora_mpi_in_place(), x.baseAddress! + off, Int32(n), agora_mpi_float(), agora_mpi_sum(), agora_mpi_comm_world())
      guard r == MPI_SUCCESS else { throw ClusterError.mpi("MPI_Allreduce (\(r))") }
      off += n
    }
    allreduceSeconds += Date().timeIntervalSince(t)
    allreduces += 1
  }

  /// Sums doubles over the ranks, in place.
  public func allreduceSum(_ x: inout [Double]) throws {
    let r = x.withUnsafeMutableBufferPointer {
      MPI_Allreduce(agora_mpi_in_place(), $0.baseAddress!, Int32($0.count), agora_mpi_double(), agora_mpi_sum(), agora_mpi_comm_world())
    }
    guard r == MPI_SUCCESS else { throw ClusterError.mpi("MPI_Allreduce (\(r))") }
  }

  /// Rank 0's `x` to every rank (in place).
  public func broadcast(_ x: UnsafeMutableBufferPointer<Float>) throws {
    var off = 0
    while off < x.count {
      let n = min(x.count - off, Int(Int32.max / 2))
      let r = MPI_Bcast(x.baseAddress! + off, Int32(n), agora_mpi_float(), 0, agora_mpi_comm_world())
      guard r == MPI_SUCCESS else { throw ClusterError.mpi("MPI_Bcast (\(r))") }
      off += n
    }
  }

  /// Rank 0's integers to every rank (in place). The other ranks wait for them sleeping a millisecond at a
  /// time (a non-blocking broadcast, tested): Open MPI's blocking calls spin, and a rank waiting for rank 0's
  /// next command (while it talks to the coordinator) would take a core from the processes that work.
  public func broadcast(_ x: inout [Int32]) throws {
    try x.withUnsafeMutableBufferPointer { b in
      var request: MPI_Request? = nil
      var r = MPI_Ibcast(b.baseAddress!, Int32(b.count), agora_mpi_int(), 0, agora_mpi_comm_world(), &request)
      guard r == MPI_SUCCESS else { throw ClusterError.mpi("MPI_Ibcast (\(r))") }
      var done: Int32 = 0
      while done == 0 {
        r = MPI_Test(&request, &done, nil)
        guard r == MPI_SUCCESS else { throw ClusterError.mpi("MPI_Test (\(r))") }
        if done == 0 { usleep(1000) }
      }
    }
  }

  /// Ends every rank's process (after an error on one rank, the others would wait for it forever).
  public func abort(_ code: Int32 = 1) -> Never {
    MPI_Abort(agora_mpi_comm_world(), code)
    exit(code)
  }
}

public enum ClusterError: Error, Equatable, CustomStringConvertible {
  case mpi(String)
  case config(String)
  public var description: String {
    switch self {
    case .mpi(let s): return "MPI: \(s) failed"
    case .config(let s): return "cluster node: \(s)"
    }
  }
}
