/// Fragments of the pre-tokens a node keeps back (SPEC §4.4).
///
/// The thresholds drop rare pre-tokens, and with them most of a highly inflected language's word forms: from a
/// megabyte of Greek, Romanian or Finnish a node keeps a few thousand forms and holds back 16–41% of the
/// occurrences, so the merges inside those words (stems and endings that are common, in words that are not)
/// never reach the coordinator, and the language is served worse than a vocabulary learned from its text. A
/// node may send those words' fragments instead: each occurrence of a held-back pre-token is cut into pieces of
/// `length` characters from its start (a leading space rides with the first piece; the last piece takes what
/// is left), and the pieces are counted, per document, like pre-tokens — and thresholded like them (k, m and
/// the noise), so a piece leaves the node only if it is itself frequent, in enough documents. To the learner a
/// piece is one more pre-token: merges inside it are learned, merges across a cut are not.
extension PreTokenCounts {
  /// The pieces of every occurrence in `texts` of the pre-tokens in `heldBack`, counted with their documents (the
  /// table's sizes are zero: the text is already counted).
  public static func fragments(language: String, texts: [String], heldBack: Set<[UInt8]>, length: Int) -> PreTokenCounts {
    var c = PreTokenCounts(language: language)
    guard length >= 1, !heldBack.isEmpty else { return c }
    var tally = Tally()
    var word: [UInt8] = []
    scan(texts, sizes: { _, _, _ in }) { w, doc in
      word.removeAll(keepingCapacity: true)
      word.append(contentsOf: w)
      guard heldBack.contains(word) else { return }
      for piece in cut(w, length: length) { tally.add(piece, document: doc) }
    }
    c.entries = tally.entries
    return c
  }

  /// `w` in pieces of `length` Unicode scalars from its start; a leading space does not count as one.
  public static func cut(_ w: ArraySlice<UInt8>, length: Int) -> [ArraySlice<UInt8>] {
    var out: [ArraySlice<UInt8>] = []
    var start = w.startIndex
    var i = w.startIndex
    if i < w.endIndex, w[i] == 0x20 { i += 1 }
    var scalars = 0
    while i < w.endIndex {
      // The next scalar's end.
      var j = i + 1
      while j < w.endIndex, w[j] & 0xC0 == 0x80 { j += 1 }
      scalars += 1
      i = j
      if scalars == length {
        out.append(w[start..<i])
        start = i
        scalars = 0
      }
    }
    if start < w.endIndex { out.append(w[start..<w.endIndex]) }
    return out
  }

  /// `thresholded`, then the held-back pre-tokens' pieces of `fragmentLength` characters, thresholded in turn,
  /// added to what was kept (a piece equal to a kept pre-token adds to its count). `texts` are the counted texts.
  public func thresholded(texts: [String], fragmentLength: Int, minCount: UInt64, minDocuments: UInt32, noise: Double = 0,
                          random: @escaping () -> UInt64 = { UInt64.random(in: 0...UInt64.max) })
    -> (PreTokenCounts, Filtered, fragments: Filtered) {
    var (kept, f) = thresholded(minCount: minCount, minDocuments: minDocuments, noise: noise, random: random)
    guard fragmentLength > 0 else { return (kept, f, Filtered()) }
    let heldBack = Set(entries.keys.filter { kept.entries[$0] == nil })
    let pieces = PreTokenCounts.fragments(language: language, texts: texts, heldBack: heldBack, length: fragmentLength)
    let (sent, pf) = pieces.thresholded(minCount: minCount, minDocuments: minDocuments, noise: noise, random: random)
    kept.addEntries(sent.entries)
    return (kept, f, pf)
  }
}
