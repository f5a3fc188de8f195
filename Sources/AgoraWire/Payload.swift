/// Memory that holds a payload frame's bytes for as long as the object lives: a received libzmq message, or
/// a sealed chunk in a send buffer that libzmq reads in place.
public protocol PayloadStorage: AnyObject, Sendable {
  /// The bytes; valid, and not changed by anyone, while the object lives.
  var bytes: UnsafeRawBufferPointer { get }
}

/// The bytes of a payload frame (model and update chunks): an array, or memory owned by a `PayloadStorage`,
/// so that a megabyte chunk goes from libzmq to the consumer (and from the sealer to libzmq) without a copy.
public struct Payload: Sendable, Equatable, CustomStringConvertible {
  enum Storage: Sendable {
    case array([UInt8])
    case owned(any PayloadStorage)
  }
  let storage: Storage

  public init(_ bytes: [UInt8]) { storage = .array(bytes) }
  public init(_ owner: any PayloadStorage) { storage = .owned(owner) }

  /// The object that owns the bytes, if they are not an array.
  public var owner: (any PayloadStorage)? {
    if case .owned(let o) = storage { return o }
    return nil
  }

  public var count: Int {
    switch storage {
    case .array(let a): return a.count
    case .owned(let o): return o.bytes.count
    }
  }

  public var isEmpty: Bool { count == 0 }

  public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    switch storage {
    case .array(let a): return try a.withUnsafeBytes(body)
    case .owned(let o): return try withExtendedLifetime(o) { try body(o.bytes) }
    }
  }

  /// The bytes as an array (a copy unless they are one already).
  public var array: [UInt8] {
    switch storage {
    case .array(let a): return a
    case .owned: return withUnsafeBytes { Array($0) }
    }
  }

  public static func == (a: Payload, b: Payload) -> Bool {
    a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.count == y.count && x.elementsEqual(y) } }
  }

  public var description: String { "Payload(\(count) bytes)" }
}
