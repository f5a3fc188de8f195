/// The nearest of a set of names to a misspelt one (configuration keys, declaration keys): what an error
/// suggests with "did you mean …?".
public enum NearestName {
  /// The candidate with the smallest edit distance to `key` (ties: the first in sorted order), if within a third
  /// of its length (at least 2).
  public static func to(_ key: String, among candidates: Set<String>) -> String? {
    let a = Array(key.utf8)
    var best: (String, Int)?
    for c in candidates.sorted() {
      let b = Array(c.utf8)
      guard !a.isEmpty, !b.isEmpty else { continue }
      var row = Array(0...b.count)
      for i in 1...a.count {
        var diagonal = row[0]
        row[0] = i
        for j in 1...b.count {
          let above = row[j]
          row[j] = min(above + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1))
          diagonal = above
        }
      }
      if best == nil || row[b.count] < best!.1 { best = (c, row[b.count]) }
    }
    guard let (c, d) = best, d <= max(2, a.count / 3) else { return nil }
    return c
  }
}
