#if arch(x86_64)
import CIntrinsics

/// BLAKE3's compression function on 16 inputs at once with AVX-512 (one input per 32-bit lane of a
/// 512-bit register). This module is compiled for AVX-512 and holds nothing else: `AgoraDigest` calls it
/// only after checking that the CPU and the OS support AVX-512 (`Blake3.best`), and everything else is
/// built for the baseline CPU. The functions are checked against the portable code and `b3sum` in the tests.
public enum Blake3AVX512 {
  typealias Z = __m512i

  /// Hashes `lanes` (1…16) inputs of `blocks` 64-byte blocks each, input i at `base + i·stride`, and
  /// writes their 32-byte chaining values one after another to `out`. The key is BLAKE3's IV (hash mode).
  /// Input i uses counter `counter + i` when `incrementCounter` (chunks), `counter` otherwise (parents);
  /// every block gets `flags`, the first also `flagsStart`, the last also `flagsEnd`.
  public static func hash(base: UnsafeRawPointer, stride: Int, lanes: Int, blocks: Int, counter: UInt64, incrementCounter: Bool,
                          flags: UInt32, flagsStart: UInt32, flagsEnd: UInt32, out: UnsafeMutableRawPointer) {
    precondition(lanes >= 1 && lanes <= 16 && blocks >= 1)
    withUnsafeTemporaryAllocation(of: Z.self, capacity: 16 + 8 + 10) { scratch in
      let m = scratch.baseAddress!, cv = m + 16, tables = m + 24
      // Counters (low and high words) per lane, and the transposition's index vectors.
      withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 32) { words in
        for i in 0..<16 {
          let c = counter &+ (incrementCounter ? UInt64(i) : 0)
          words[i] = UInt32(truncatingIfNeeded: c)
          words[16 + i] = UInt32(truncatingIfNeeded: c >> 32)
        }
        tables[0] = _mm512_loadu_si512(words.baseAddress!)
        tables[1] = _mm512_loadu_si512(words.baseAddress! + 16)
        for b in 0..<4 {
          let d = 1 << b
          for j in 0..<16 { words[j] = UInt32(j & d == 0 ? j : 16 + j - d) }
          for j in 0..<16 { words[16 + j] = UInt32(j & d == 0 ? j + d : 16 + j) }
          tables[2 + 2 * b] = _mm512_loadu_si512(words.baseAddress!)
          tables[3 + 2 * b] = _mm512_loadu_si512(words.baseAddress! + 16)
        }
      }
      for w in 0..<8 { cv[w] = _mm512_set1_epi32(Int32(bitPattern: iv[w])) }
      // Lanes beyond `lanes` hash a copy of input 0 (their results are not written).
      let step = lanes == 16 ? stride : 0
      for block in 0..<blocks {
        loadTransposed(m, base + 64 * block, stride: stride, lanes: lanes, step: step, tables + 2)
        var f = flags
        if block == 0 { f |= flagsStart }
        if block == blocks - 1 { f |= flagsEnd }
        compress(cv, m, counterLow: tables[0], counterHigh: tables[1], flags: _mm512_set1_epi32(Int32(bitPattern: f)))
      }
      // Back to one chaining value per input.
      withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 128) { t in
        for w in 0..<8 { _mm512_storeu_si512(t.baseAddress! + 16 * w, cv[w]) }
        let o = out.assumingMemoryBound(to: UInt32.self)
        for i in 0..<lanes { for w in 0..<8 { o[8 * i + w] = t[16 * w + i].littleEndian } }
      }
    }
  }

  static let iv: [UInt32] = [0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A, 0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19]

  /// Loads block words of the 16 inputs at `p + i·stride` and transposes the 16×16 words: row i (lane i's
  /// block) becomes column i. Four butterfly stages; stage b pairs rows i and
  /// i + 2^b and exchanges the elements whose column has bit b set with those of the partner row (written
  /// out so that the rows stay in registers).
  @inline(__always)
  static func loadTransposed(_ m: UnsafeMutablePointer<Z>, _ p: UnsafeRawPointer, stride: Int, lanes: Int, step: Int, _ idx: UnsafeMutablePointer<Z>) {
    @inline(__always) func row(_ i: Int) -> Z { _mm512_loadu_si512(step != 0 || i < lanes ? p + i * stride : p) }
    var r0 = row(0), r1 = row(1), r2 = row(2), r3 = row(3), r4 = row(4), r5 = row(5), r6 = row(6), r7 = row(7)
    var r8 = row(8), r9 = row(9), r10 = row(10), r11 = row(11), r12 = row(12), r13 = row(13), r14 = row(14), r15 = row(15)
    var lo = idx[0], hi = idx[1]
    (r0, r1) = (_mm512_permutex2var_epi32(r0, lo, r1), _mm512_permutex2var_epi32(r0, hi, r1))
    (r2, r3) = (_mm512_permutex2var_epi32(r2, lo, r3), _mm512_permutex2var_epi32(r2, hi, r3))
    (r4, r5) = (_mm512_permutex2var_epi32(r4, lo, r5), _mm512_permutex2var_epi32(r4, hi, r5))
    (r6, r7) = (_mm512_permutex2var_epi32(r6, lo, r7), _mm512_permutex2var_epi32(r6, hi, r7))
    (r8, r9) = (_mm512_permutex2var_epi32(r8, lo, r9), _mm512_permutex2var_epi32(r8, hi, r9))
    (r10, r11) = (_mm512_permutex2var_epi32(r10, lo, r11), _mm512_permutex2var_epi32(r10, hi, r11))
    (r12, r13) = (_mm512_permutex2var_epi32(r12, lo, r13), _mm512_permutex2var_epi32(r12, hi, r13))
    (r14, r15) = (_mm512_permutex2var_epi32(r14, lo, r15), _mm512_permutex2var_epi32(r14, hi, r15))
    lo = idx[2]; hi = idx[3]
    (r0, r2) = (_mm512_permutex2var_epi32(r0, lo, r2), _mm512_permutex2var_epi32(r0, hi, r2))
    (r1, r3) = (_mm512_permutex2var_epi32(r1, lo, r3), _mm512_permutex2var_epi32(r1, hi, r3))
    (r4, r6) = (_mm512_permutex2var_epi32(r4, lo, r6), _mm512_permutex2var_epi32(r4, hi, r6))
    (r5, r7) = (_mm512_permutex2var_epi32(r5, lo, r7), _mm512_permutex2var_epi32(r5, hi, r7))
    (r8, r10) = (_mm512_permutex2var_epi32(r8, lo, r10), _mm512_permutex2var_epi32(r8, hi, r10))
    (r9, r11) = (_mm512_permutex2var_epi32(r9, lo, r11), _mm512_permutex2var_epi32(r9, hi, r11))
    (r12, r14) = (_mm512_permutex2var_epi32(r12, lo, r14), _mm512_permutex2var_epi32(r12, hi, r14))
    (r13, r15) = (_mm512_permutex2var_epi32(r13, lo, r15), _mm512_permutex2var_epi32(r13, hi, r15))
    lo = idx[4]; hi = idx[5]
    (r0, r4) = (_mm512_permutex2var_epi32(r0, lo, r4), _mm512_permutex2var_epi32(r0, hi, r4))
    (r1, r5) = (_mm512_permutex2var_epi32(r1, lo, r5), _mm512_permutex2var_epi32(r1, hi, r5))
    (r2, r6) = (_mm512_permutex2var_epi32(r2, lo, r6), _mm512_permutex2var_epi32(r2, hi, r6))
    (r3, r7) = (_mm512_permutex2var_epi32(r3, lo, r7), _mm512_permutex2var_epi32(r3, hi, r7))
    (r8, r12) = (_mm512_permutex2var_epi32(r8, lo, r12), _mm512_permutex2var_epi32(r8, hi, r12))
    (r9, r13) = (_mm512_permutex2var_epi32(r9, lo, r13), _mm512_permutex2var_epi32(r9, hi, r13))
    (r10, r14) = (_mm512_permutex2var_epi32(r10, lo, r14), _mm512_permutex2var_epi32(r10, hi, r14))
    (r11, r15) = (_mm512_permutex2var_epi32(r11, lo, r15), _mm512_permutex2var_epi32(r11, hi, r15))
    lo = idx[6]; hi = idx[7]
    (r0, r8) = (_mm512_permutex2var_epi32(r0, lo, r8), _mm512_permutex2var_epi32(r0, hi, r8))
    (r1, r9) = (_mm512_permutex2var_epi32(r1, lo, r9), _mm512_permutex2var_epi32(r1, hi, r9))
    (r2, r10) = (_mm512_permutex2var_epi32(r2, lo, r10), _mm512_permutex2var_epi32(r2, hi, r10))
    (r3, r11) = (_mm512_permutex2var_epi32(r3, lo, r11), _mm512_permutex2var_epi32(r3, hi, r11))
    (r4, r12) = (_mm512_permutex2var_epi32(r4, lo, r12), _mm512_permutex2var_epi32(r4, hi, r12))
    (r5, r13) = (_mm512_permutex2var_epi32(r5, lo, r13), _mm512_permutex2var_epi32(r5, hi, r13))
    (r6, r14) = (_mm512_permutex2var_epi32(r6, lo, r14), _mm512_permutex2var_epi32(r6, hi, r14))
    (r7, r15) = (_mm512_permutex2var_epi32(r7, lo, r15), _mm512_permutex2var_epi32(r7, hi, r15))
    m[0] = r0; m[1] = r1; m[2] = r2; m[3] = r3; m[4] = r4; m[5] = r5; m[6] = r6; m[7] = r7
    m[8] = r8; m[9] = r9; m[10] = r10; m[11] = r11; m[12] = r12; m[13] = r13; m[14] = r14; m[15] = r15
  }

  @inline(__always) static func g(_ a: inout Z, _ b: inout Z, _ c: inout Z, _ d: inout Z, _ x: Z, _ y: Z) {
    a = _mm512_add_epi32(_mm512_add_epi32(a, b), x)
    d = _mm512_rorv_epi32(_mm512_xor_si512(d, a), _mm512_set1_epi32(16))
    c = _mm512_add_epi32(c, d)
    b = _mm512_rorv_epi32(_mm512_xor_si512(b, c), _mm512_set1_epi32(12))
    a = _mm512_add_epi32(_mm512_add_epi32(a, b), y)
    d = _mm512_rorv_epi32(_mm512_xor_si512(d, a), _mm512_set1_epi32(8))
    c = _mm512_add_epi32(c, d)
    b = _mm512_rorv_epi32(_mm512_xor_si512(b, c), _mm512_set1_epi32(7))
  }

  /// One compression of every lane: `cv` (8 vectors) becomes the new chaining values. The block length is
  /// always 64 here (whole blocks only).
  @inline(__always)
  static func compress(_ cv: UnsafeMutablePointer<Z>, _ m: UnsafeMutablePointer<Z>, counterLow: Z, counterHigh: Z, flags: Z) {
    var v0 = cv[0], v1 = cv[1], v2 = cv[2], v3 = cv[3], v4 = cv[4], v5 = cv[5], v6 = cv[6], v7 = cv[7]
    var v8 = _mm512_set1_epi32(Int32(bitPattern: iv[0])), v9 = _mm512_set1_epi32(Int32(bitPattern: iv[1]))
    var v10 = _mm512_set1_epi32(Int32(bitPattern: iv[2])), v11 = _mm512_set1_epi32(Int32(bitPattern: iv[3]))
    var v12 = counterLow, v13 = counterHigh, v14 = _mm512_set1_epi32(64), v15 = flags
    // round 0
    g(&v0, &v4, &v8, &v12, m[0], m[1])
    g(&v1, &v5, &v9, &v13, m[2], m[3])
    g(&v2, &v6, &v10, &v14, m[4], m[5])
    g(&v3, &v7, &v11, &v15, m[6], m[7])
    g(&v0, &v5, &v10, &v15, m[8], m[9])
    g(&v1, &v6, &v11, &v12, m[10], m[11])
    g(&v2, &v7, &v8, &v13, m[12], m[13])
    g(&v3, &v4, &v9, &v14, m[14], m[15])
    // round 1
    g(&v0, &v4, &v8, &v12, m[2], m[6])
    g(&v1, &v5, &v9, &v13, m[3], m[10])
    g(&v2, &v6, &v10, &v14, m[7], m[0])
    g(&v3, &v7, &v11, &v15, m[4], m[13])
    g(&v0, &v5, &v10, &v15, m[1], m[11])
    g(&v1, &v6, &v11, &v12, m[12], m[5])
    g(&v2, &v7, &v8, &v13, m[9], m[14])
    g(&v3, &v4, &v9, &v14, m[15], m[8])
    // round 2
    g(&v0, &v4, &v8, &v12, m[3], m[4])
    g(&v1, &v5, &v9, &v13, m[10], m[12])
    g(&v2, &v6, &v10, &v14, m[13], m[2])
    g(&v3, &v7, &v11, &v15, m[7], m[14])
    g(&v0, &v5, &v10, &v15, m[6], m[5])
    g(&v1, &v6, &v11, &v12, m[9], m[0])
    g(&v2, &v7, &v8, &v13, m[11], m[15])
    g(&v3, &v4, &v9, &v14, m[8], m[1])
    // round 3
    g(&v0, &v4, &v8, &v12, m[10], m[7])
    g(&v1, &v5, &v9, &v13, m[12], m[9])
    g(&v2, &v6, &v10, &v14, m[14], m[3])
    g(&v3, &v7, &v11, &v15, m[13], m[15])
    g(&v0, &v5, &v10, &v15, m[4], m[0])
    g(&v1, &v6, &v11, &v12, m[11], m[2])
    g(&v2, &v7, &v8, &v13, m[5], m[8])
    g(&v3, &v4, &v9, &v14, m[1], m[6])
    // round 4
    g(&v0, &v4, &v8, &v12, m[12], m[13])
    g(&v1, &v5, &v9, &v13, m[9], m[11])
    g(&v2, &v6, &v10, &v14, m[15], m[10])
    g(&v3, &v7, &v11, &v15, m[14], m[8])
    g(&v0, &v5, &v10, &v15, m[7], m[2])
    g(&v1, &v6, &v11, &v12, m[5], m[3])
    g(&v2, &v7, &v8, &v13, m[0], m[1])
    g(&v3, &v4, &v9, &v14, m[6], m[4])
    // round 5
    g(&v0, &v4, &v8, &v12, m[9], m[14])
    g(&v1, &v5, &v9, &v13, m[11], m[5])
    g(&v2, &v6, &v10, &v14, m[8], m[12])
    g(&v3, &v7, &v11, &v15, m[15], m[1])
    g(&v0, &v5, &v10, &v15, m[13], m[3])
    g(&v1, &v6, &v11, &v12, m[0], m[10])
    g(&v2, &v7, &v8, &v13, m[2], m[6])
    g(&v3, &v4, &v9, &v14, m[4], m[7])
    // round 6
    g(&v0, &v4, &v8, &v12, m[11], m[15])
    g(&v1, &v5, &v9, &v13, m[5], m[0])
    g(&v2, &v6, &v10, &v14, m[1], m[9])
    g(&v3, &v7, &v11, &v15, m[8], m[6])
    g(&v0, &v5, &v10, &v15, m[14], m[10])
    g(&v1, &v6, &v11, &v12, m[2], m[12])
    g(&v2, &v7, &v8, &v13, m[3], m[4])
    g(&v3, &v4, &v9, &v14, m[7], m[13])
      cv[0] = _mm512_xor_si512(v0, v8); cv[1] = _mm512_xor_si512(v1, v9)
    cv[2] = _mm512_xor_si512(v2, v10); cv[3] = _mm512_xor_si512(v3, v11)
    cv[4] = _mm512_xor_si512(v4, v12); cv[5] = _mm512_xor_si512(v5, v13)
    cv[6] = _mm512_xor_si512(v6, v14); cv[7] = _mm512_xor_si512(v7, v15)
  }
}
#endif
