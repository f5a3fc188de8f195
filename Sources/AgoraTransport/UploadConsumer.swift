import Foundation

/// What an `UploadReceiver` hands on, in order, on the thread that calls `handle`. Every requirement has a
/// default that does nothing (or, for `destination`, lets the receiver decrypt into its own scratch).
public protocol UploadConsumer: AnyObject {
  /// An upload starts streaming (it had waited for a slot: `UploadReceiver.maxActive`).
  func uploadStarted(node: String, transfer: UInt64)
  /// An upload that had started streaming is abandoned (refused, failed, or its node gone).
  func uploadAborted(node: String, transfer: UInt64)
  /// An upload is refused, streaming or not: the round it was for and why.
  func uploadRefused(node: String, round: UInt64, reason: String)
  /// Where chunk `chunk`'s plaintext of `bytes` octets goes: a buffer of exactly that many bytes, or nil for the
  /// receiver's scratch. A consumer that keeps the plaintext (the coordinator stages an update) has it decrypted
  /// in place instead of copying it in `chunk`.
  func destination(node: String, chunk: Int, bytes: Int) -> UnsafeMutableRawBufferPointer?
  /// Each decrypted chunk, in order; throwing refuses the update. Unless `destination` placed it, the
  /// plaintext is in a buffer the receiver reuses for the next chunk: copy what you keep.
  func chunk(node: String, index: Int, plaintext: UnsafeRawBufferPointer) throws
  /// A verified update (every chunk authenticated, the signature checked); throwing refuses it.
  func completed(_ upload: UploadReceiver.Completed) throws
}

extension UploadConsumer {
  public func uploadStarted(node: String, transfer: UInt64) {}
  public func uploadAborted(node: String, transfer: UInt64) {}
  public func uploadRefused(node: String, round: UInt64, reason: String) {}
  public func destination(node: String, chunk: Int, bytes: Int) -> UnsafeMutableRawBufferPointer? { nil }
  public func chunk(node: String, index: Int, plaintext: UnsafeRawBufferPointer) throws {}
  public func completed(_ upload: UploadReceiver.Completed) throws {}
}
