// libFuzzer entry for the wire decoder (not a SwiftPM target: scripts/fuzz compiles it with
// `swiftc -sanitize=fuzzer,address` together with Sources/AgoraWire).
//
// Input layout: octet 0 picks the frame count (1–4); each frame is a u16 little-endian length and that many
// octets (clipped to what is left). Properties checked:
//   1. decoding never crashes, traps or allocates by a length the input claims (ASan and libFuzzer's
//      -rss_limit_mb catch that);
//   2. the encoding is canonical: whatever decodes re-encodes to exactly the same frames;
//   3. Z85 and hex decoders never crash and round-trip what they accept.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWire(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let input = Array(UnsafeBufferPointer(start: data, count: size))
  guard !input.isEmpty else { return 0 }
  var frames: [[UInt8]] = []
  var i = 1
  for _ in 0..<(Int(input[0]) % 4 + 1) {
    guard i + 2 <= input.count else { break }
    let n = Int(input[i]) | Int(input[i + 1]) << 8
    i += 2
    let end = min(input.count, i + n)
    frames.append(Array(input[i..<end]))
    i = end
  }
  if let m = try? Message.decode(frames) {
    let again = m.frames()
    if again != frames { fatalError("non-canonical encoding: \(frames) decoded to \(m) which encodes to \(again)") }
  }
  let text = String(decoding: input, as: UTF8.self)
  if let b = Z85.decode(text), Z85.encode(b) != text { fatalError("Z85 round trip failed for \(text)") }
  if let b = unhex(text), unhex(hex(b)) != b { fatalError("hex round trip failed") }
  return 0
}
