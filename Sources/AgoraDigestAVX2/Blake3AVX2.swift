#if arch(x86_64)
import CIntrinsics

/// BLAKE3's compression function on 8 inputs at once with AVX2 (one input per 32-bit lane of a 256-bit
/// register), for CPUs without AVX-512. Like `Blake3AVX512`, this module holds nothing else and is the only one
/// built for AVX2 intrinsics; `AgoraDigest` calls it after a CPU check. Checked against the portable code and
/// `b3sum` in the tests.
public enum Blake3AVX2 {
  typealias Y = __m256i

  /// Hashes `lanes` (1…8) inputs of `blocks` 64-byte blocks each, input i at `base + i·stride`, and writes
  /// their 32-byte chaining values one after another to `out` (the same contract as `Blake3AVX512.hash`).
  public static func hash(base: UnsafeRawPointer, stride: Int, lanes: Int, blocks: Int, counter: UInt64, incrementCounter: Bool,
                          flags: UInt32, flagsStart: UInt32, flagsEnd: UInt32, out: UnsafeMutableRawPointer) {
    precondition(lanes >= 1 && lanes <= 8 && blocks >= 1)
    withUnsafeTemporaryAllocation(of: Y.self, capacity: 16 + 8 + 4) { scratch in
      let m = scratch.baseAddress!, cv = m + 16, tables = m + 24
      withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 16) { words in
        for i in 0..<8 {
          let c = counter &+ (incrementCounter ? UInt64(i) : 0)
          words[i] = UInt32(truncatingIfNeeded: c)
          words[8 + i] = UInt32(truncatingIfNeeded: c >> 32)
        }
        tables[0] = _mm256_loadu_si256(UnsafeRawPointer(words.baseAddress!).assumingMemoryBound(to: Y.self))
        tables[1] = _mm256_loadu_si256(UnsafeRawPointer(words.baseAddress! + 8).assumingMemoryBound(to: Y.self))
      }
      // vpshufb masks for rotations by 16 and 8 bits (within each 32-bit word, both 128-bit halves).
      withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 64) { bytes in
        for i in 0..<32 {
          let w = i & ~3, b = i & 3
          bytes[i] = UInt8(w + (b + 2) % 4)
          bytes[32 + i] = UInt8(w + (b + 1) % 4)
        }
        tables[2] = _mm256_loadu_si256(UnsafeRawPointer(bytes.baseAddress!).assumingMemoryBound(to: Y.self))
        tables[3] = _mm256_loadu_si256(UnsafeRawPointer(bytes.baseAddress! + 32).assumingMemoryBound(to: Y.self))
      }
      for w in 0..<8 { cv[w] = _mm256_set1_epi32(Int32(bitPattern: iv[w])) }
      let step = lanes == 8 ? stride : 0
      for block in 0..<blocks {
        loadTransposed(m, base + 64 * block, stride: stride, lanes: lanes, step: step)
        var f = flags
        if block == 0 { f |= flagsStart }
        if block == blocks - 1 { f |= flagsEnd }
        compress(cv, m, counterLow: tables[0], counterHigh: tables[1], flags: _mm256_set1_epi32(Int32(bitPattern: f)),
                 rot16: tables[2], rot8: tables[3])
      }
      withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { t in
        for w in 0..<8 { _mm256_storeu_si256(UnsafeMutableRawPointer(t.baseAddress! + 8 * w).assumingMemoryBound(to: Y.self), cv[w]) }
        let o = out.assumingMemoryBound(to: UInt32.self)
        for i in 0..<lanes { for w in 0..<8 { o[8 * i + w] = t[8 * w + i].littleEndian } }
      }
    }
  }

  static let iv: [UInt32] = [0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A, 0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19]

  /// Loads block words of the 8 inputs at `p + i·stride` transposed: `m[j]` holds word j of every input.
  /// Each group of four words is loaded as inputs i and i+4 in the two 128-bit halves of one register, so
  /// the 4×4 transposition that follows stays within the halves (AVX2's unpack instructions).
  @inline(__always)
  static func loadTransposed(_ m: UnsafeMutablePointer<Y>, _ p: UnsafeRawPointer, stride: Int, lanes: Int, step: Int) {
    @inline(__always) func row(_ i: Int, _ k: Int) -> __m128i {
      _mm_loadu_si128((step != 0 || i < lanes ? p + i * stride : p).advanced(by: 16 * k).assumingMemoryBound(to: __m128i.self))
    }
    for k in 0..<4 {
      let a0 = _mm256_set_m128i(row(4, k), row(0, k)), a1 = _mm256_set_m128i(row(5, k), row(1, k))
      let a2 = _mm256_set_m128i(row(6, k), row(2, k)), a3 = _mm256_set_m128i(row(7, k), row(3, k))
      let t0 = _mm256_unpacklo_epi32(a0, a1), t1 = _mm256_unpackhi_epi32(a0, a1)
      let t2 = _mm256_unpacklo_epi32(a2, a3), t3 = _mm256_unpackhi_epi32(a2, a3)
      m[4 * k] = _mm256_unpacklo_epi64(t0, t2)
      m[4 * k + 1] = _mm256_unpackhi_epi64(t0, t2)
      m[4 * k + 2] = _mm256_unpacklo_epi64(t1, t3)
      m[4 * k + 3] = _mm256_unpackhi_epi64(t1, t3)
    }
  }

  @inline(__always) static func g(_ a: inout Y, _ b: inout Y, _ c: inout Y, _ d: inout Y, _ x: Y, _ y: Y, _ r16: Y, _ r8: Y) {
    a = _mm256_add_epi32(_mm256_add_epi32(a, b), x)
    d = _mm256_shuffle_epi8(_mm256_xor_si256(d, a), r16)
    c = _mm256_add_epi32(c, d)
    var t = _mm256_xor_si256(b, c)
    b = _mm256_or_si256(_mm256_srli_epi32(t, 12), _mm256_slli_epi32(t, 20))
    a = _mm256_add_epi32(_mm256_add_epi32(a, b), y)
    d = _mm256_shuffle_epi8(_mm256_xor_si256(d, a), r8)
    c = _mm256_add_epi32(c, d)
    t = _mm256_xor_si256(b, c)
    b = _mm256_or_si256(_mm256_srli_epi32(t, 7), _mm256_slli_epi32(t, 25))
  }

  /// One compression of every lane (whole 64-byte blocks): `cv` (8 vectors) becomes the new chaining values.
  @inline(__always)
  static func compress(_ cv: UnsafeMutablePointer<Y>, _ m: UnsafeMutablePointer<Y>, counterLow: Y, counterHigh: Y, flags: Y, rot16: Y, rot8: Y) {
    var v0 = cv[0], v1 = cv[1], v2 = cv[2], v3 = cv[3], v4 = cv[4], v5 = cv[5], v6 = cv[6], v7 = cv[7]
    var v8 = _mm256_set1_epi32(Int32(bitPattern: iv[0])), v9 = _mm256_set1_epi32(Int32(bitPattern: iv[1]))
    var v10 = _mm256_set1_epi32(Int32(bitPattern: iv[2])), v11 = _mm256_set1_epi32(Int32(bitPattern: iv[3]))
    var v12 = counterLow, v13 = counterHigh, v14 = _mm256_set1_epi32(64), v15 = flags
    // round 0
    g(&v0, &v4, &v8, &v12, m[0], m[1], rot16, rot8)
    g(&v1, &v5, &v9, &v13, m[2], m[3], rot16, rot8)
    g(&v2, &v6, &v10, &v14, m[4], m[5], rot16, rot8)
    g(&v3, &v7, &v11, &v15, m[6], m[7], rot16, rot8)
    g(&v0, &v5, &v10, &v15, m[8], m[9], rot16, rot8)
    g(&v1, &v6, &v11, &v12, m[10], m[11], rot16, rot8)
    g(&v2, &v7, &v8, &v13, m[12], m[13], rot16, rot8)
    g(&v3, &v4, &v9, &v14, m[14], m[15], rot16, rot8)
    // round 1
    g(&v0, &v4, &v8, &v12, m[2], m[6], rot16, rot8)
    g(&v1, &v5, &v9, &v13, m[3], m[10], rot16, rot8)
    g(&v2, &v6, &v10, &v14, m[7], m[0], rot16, rot8)
    g(&v3, &v7, &v11, &v15, m[4], m[13], rot16, rot8)
    g(&v0, &v5, &v10, &v15, m[1], m[11], rot16, rot8)
    g(&v1, &v6, &v11, &v12, m[12], m[5], rot16, rot8)
    g(&v2, &v7, &v8, &v13, m[9], m[14], rot16, rot8)
    g(&v3, &v4, &v9, &v14, m[15], m[8], rot16, rot8)
    // round 2
    g(&v0, &v4, &v8, &v12, m[3], m[4], rot16, rot8)
    g(&v1, &v5, &v9, &v13, m[10], m[12], rot16, rot8)
    g(&v2, &v6, &v10, &v14, m[13], m[2], rot16, rot8)
    g(&v3, &v7, &v11, &v15, m[7], m[14], rot16, rot8)
    g(&v0, &v5, &v10, &v15, m[6], m[5], rot16, rot8)
    g(&v1, &v6, &v11, &v12, m[9], m[0], rot16, rot8)
    g(&v2, &v7, &v8, &v13, m[11], m[15], rot16, rot8)
    g(&v3, &v4, &v9, &v14, m[8], m[1], rot16, rot8)
    // round 3
    g(&v0, &v4, &v8, &v12, m[10], m[7], rot16, rot8)
    g(&v1, &v5, &v9, &v13, m[12], m[9], rot16, rot8)
    g(&v2, &v6, &v10, &v14, m[14], m[3], rot16, rot8)
    g(&v3, &v7, &v11, &v15, m[13], m[15], rot16, rot8)
    g(&v0, &v5, &v10, &v15, m[4], m[0], rot16, rot8)
    g(&v1, &v6, &v11, &v12, m[11], m[2], rot16, rot8)
    g(&v2, &v7, &v8, &v13, m[5], m[8], rot16, rot8)
    g(&v3, &v4, &v9, &v14, m[1], m[6], rot16, rot8)
    // round 4
    g(&v0, &v4, &v8, &v12, m[12], m[13], rot16, rot8)
    g(&v1, &v5, &v9, &v13, m[9], m[11], rot16, rot8)
    g(&v2, &v6, &v10, &v14, m[15], m[10], rot16, rot8)
    g(&v3, &v7, &v11, &v15, m[14], m[8], rot16, rot8)
    g(&v0, &v5, &v10, &v15, m[7], m[2], rot16, rot8)
    g(&v1, &v6, &v11, &v12, m[5], m[3], rot16, rot8)
    g(&v2, &v7, &v8, &v13, m[0], m[1], rot16, rot8)
    g(&v3, &v4, &v9, &v14, m[6], m[4], rot16, rot8)
    // round 5
    g(&v0, &v4, &v8, &v12, m[9], m[14], rot16, rot8)
    g(&v1, &v5, &v9, &v13, m[11], m[5], rot16, rot8)
    g(&v2, &v6, &v10, &v14, m[8], m[12], rot16, rot8)
    g(&v3, &v7, &v11, &v15, m[15], m[1], rot16, rot8)
    g(&v0, &v5, &v10, &v15, m[13], m[3], rot16, rot8)
    g(&v1, &v6, &v11, &v12, m[0], m[10], rot16, rot8)
    g(&v2, &v7, &v8, &v13, m[2], m[6], rot16, rot8)
    g(&v3, &v4, &v9, &v14, m[4], m[7], rot16, rot8)
    // round 6
    g(&v0, &v4, &v8, &v12, m[11], m[15], rot16, rot8)
    g(&v1, &v5, &v9, &v13, m[5], m[0], rot16, rot8)
    g(&v2, &v6, &v10, &v14, m[1], m[9], rot16, rot8)
    g(&v3, &v7, &v11, &v15, m[8], m[6], rot16, rot8)
    g(&v0, &v5, &v10, &v15, m[14], m[10], rot16, rot8)
    g(&v1, &v6, &v11, &v12, m[2], m[12], rot16, rot8)
    g(&v2, &v7, &v8, &v13, m[3], m[4], rot16, rot8)
    g(&v3, &v4, &v9, &v14, m[7], m[13], rot16, rot8)
    cv[0] = _mm256_xor_si256(v0, v8); cv[1] = _mm256_xor_si256(v1, v9)
    cv[2] = _mm256_xor_si256(v2, v10); cv[3] = _mm256_xor_si256(v3, v11)
    cv[4] = _mm256_xor_si256(v4, v12); cv[5] = _mm256_xor_si256(v5, v13)
    cv[6] = _mm256_xor_si256(v6, v14); cv[7] = _mm256_xor_si256(v7, v15)
  }
}
#endif
