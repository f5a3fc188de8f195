import Foundation
/// A contiguous, 64-byte aligned, zero-initialised buffer of `Float` that owns its memory.
///
/// Parameters, gradients and each optimizer moment of a model live in one `FloatBuffer` each,
/// so an update is one contiguous array for aggregation, quantisation, signing and sealing.
public final class FloatBuffer: @unchecked Sendable {
  public let count: Int
  public let pointer: UnsafeMutablePointer<Float>

  /// Octets of memory the buffer owns before `pointer` (a multiple of 64).
  public let leading: Int

  /// - Parameter leading: octets to own before the values as well (rounded up to 64), for a user that lays a
  ///   header in front of them (the coordinator stages an fp32 update, header and values, in θ's memory).
  public convenience init(count: Int) { self.init(count: count, leading: 0) }

  public init(count: Int, leading: Int) {
    precondition(count >= 0 && leading >= 0, "FloatBuffer count must not be negative")
    self.count = count
    self.leading = (leading + 63) / 64 * 64
    let raw = UnsafeMutableRawPointer.allocate(byteCount: self.leading + max(count, 1) * 4, alignment: 64)
    raw.initializeMemory(as: UInt8.self, repeating: 0, count: self.leading)
    (raw + self.leading).initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
    pointer = (raw + self.leading).assumingMemoryBound(to: Float.self)
  }

  public convenience init(_ values: [Float]) {
    self.init(count: values.count)
    values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
  }

  deinit { (UnsafeMutableRawPointer(pointer) - leading).deallocate() }

  public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: pointer, count: count) }
  public var array: [Float] { Array(buffer) }

  public func zero() { pointer.update(repeating: 0, count: count) }

  public func copy(from other: FloatBuffer) {
    precondition(other.count == count, "FloatBuffer copy: sizes differ")
    pointer.update(from: other.pointer, count: count)
  }

  /// self += other, value by value.
  public func add(_ other: FloatBuffer) {
    precondition(other.count == count, "FloatBuffer add: sizes differ")
    let (p, o) = (pointer, other.pointer)
    for i in 0..<count { p[i] += o[i] }
  }

  /// self = a − b, value by value (either may be self).
  public func store(_ a: FloatBuffer, minus b: FloatBuffer) {
    precondition(a.count == count && b.count == count, "FloatBuffer store(_:minus:): sizes differ")
    let (p, x, y) = (pointer, a.pointer, b.pointer)
    for i in 0..<count { p[i] = x[i] - y[i] }
  }

  public subscript(i: Int) -> Float {
    get { pointer[i] }
    set { pointer[i] = newValue }
  }

  /// A Fletcher-style checksum of the values' bits (two running sums per lane of eight): any change of one
  /// value, or a swap of two, changes it. For checking a copy read back from storage, not an adversary.
  public func checksum() -> UInt64 {
    var a = SIMD8<UInt32>(), b = SIMD8<UInt32>()
    let raw = UnsafeRawPointer(pointer)
    var i = 0
    while i + 8 <= count {
      a &+= raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<UInt32>.self)
      b &+= a
      i += 8
    }
    var tail: UInt32 = 0
    while i < count { tail = tail &* 31 &+ pointer[i].bitPattern; i += 1 }
    var h: UInt64 = 0
    for k in 0..<8 { h = (h &* 0x100_0000_01B3) ^ (UInt64(a[k]) << 32 | UInt64(b[k])) }
    return h ^ UInt64(tail)
  }
}

/// Whole pages of anonymous memory handed back to the kernel.
public enum Pages {
  /// `madvise(MADV_DONTNEED)` on the whole pages inside `pointer ..< pointer + bytes`.
  public static func release(_ pointer: UnsafeMutableRawPointer, bytes: Int) {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = (Int(bitPattern: pointer) + page - 1) / page * page
    let end = (Int(bitPattern: pointer) + bytes) / page * page
    guard end > start, let p = UnsafeMutableRawPointer(bitPattern: start) else { return }
    _ = madvise(p, end - start, Int32(MADV_DONTNEED))
  }
}
