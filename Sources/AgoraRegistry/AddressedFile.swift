import AgoraCrypto
import AgoraStorage
import AgoraWire
import Foundation

/// Content-addressed files, named by the BLAKE2b-256 of their bytes: the registry's blobs and the version
/// patches. Written through a `DirectFileStream` (O_DIRECT, hashed as it goes) under a temporary name, then
/// placed under their hash.
public enum AddressedFile {
  /// Writes the concatenation of `parts` as the file `dir/<BLAKE2b-256 hex>`, hashing it in the same pass
  /// unless the hash is `known`; a file of that name is kept as it is. Returns the hash.
  @discardableResult
  public static func writeAddressed(parts: [UnsafeRawBufferPointer], in dir: String, hash known: [UInt8]? = nil) throws -> [UInt8] {
    if let known, FileManager.default.fileExists(atPath: dir + "/" + hex(known)) { return known }
    let file = try Writer(in: dir, hashing: known == nil)
    do {
      for p in parts { try file.append(p) }
      return try file.finish(hash: known)
    } catch {
      file.abandon()
      throw error
    }
  }

  /// A content-addressed file written piece by piece (O_DIRECT, hashed as it goes): `finish` fsyncs it and
  /// renames it to `dir/<BLAKE2b-256 hex>`; until then it is a temporary file that `abandon` removes.
  public final class Writer {
    let dir: String, tmp: String
    let hasher: Sodium.Hasher?
    let stream: DirectFileStream

    public init(in dir: String, hashing: Bool = true) throws {
      self.dir = dir
      tmp = DurableFile.temporaryPath(in: dir, "incoming")
      let h = hashing ? Sodium.Hasher() : nil
      hasher = h
      stream = try DirectFileStream(path: tmp) { h?.update($0) }
    }

    public func append(_ bytes: UnsafeRawBufferPointer) throws { try stream.append(bytes) }

    /// Finishes the file and places it under its hash (`known`, or the one computed while writing).
    public func finish(hash known: [UInt8]? = nil) throws -> [UInt8] {
      try stream.finish()
      guard let hash = known ?? hasher?.finish() else { throw StorageError(path: tmp, problem: "written without a hash") }
      try DurableFile.place(tmp, as: dir + "/" + hex(hash))
      return hash
    }

    public func abandon() { unlink(tmp) }
  }

  /// BLAKE2b-256 of a file's contents; nil if it cannot be opened or read.
  public static func hash(of path: String) -> [UInt8]? { Sodium.blake2b(file: path)?.hash }
}
