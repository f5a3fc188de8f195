/// A contiguous, 64-byte aligned, zero-initialised buffer of `Float` that owns its memory.
///
/// Parameters, gradients and each optimizer moment of a model live in one `FloatBuffer` each,
/// so an update is one contiguous array for aggregation, quantisation, signing and sealing.
public final class FloatBuffer: @unchecked Sendable {
  public let count: Int
  public let pointer: UnsafeMutablePointer<Float>

  public init(count: Int) {
    precondition(count >= 0, "FloatBuffer count must not be negative")
    self.count = count
    let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
    raw.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
    pointer = raw.assumingMemoryBound(to: Float.self)
  }

  public convenience init(_ values: [Float]) {
    self.init(count: values.count)
    values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
  }

  deinit { UnsafeMutableRawPointer(pointer).deallocate() }

  public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: pointer, count: count) }
  public var array: [Float] { Array(buffer) }

  public func zero() { pointer.update(repeating: 0, count: count) }

  public func copy(from other: FloatBuffer) {
    precondition(other.count == count, "FloatBuffer copy: sizes differ")
    pointer.update(from: other.pointer, count: count)
  }

  public subscript(i: Int) -> Float {
    get { pointer[i] }
    set { pointer[i] = newValue }
  }
}
