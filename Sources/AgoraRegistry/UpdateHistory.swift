import Foundation
import GRDB

/// What the coordinator's acceptance rule resumes from after a restart.
extension Registry {
  /// Norms (and cosines with the step before) of the on-time updates of the last `rounds` rounds that accepted
  /// any, oldest round first (the coordinator's acceptance rule resumes from them).
  public func recentNorms(rounds: Int) throws -> (norms: [[Float]], cosines: [[Float]]) {
    func recent(_ column: String) throws -> [[Float]] {
      let rows = try db.read { db in
        try Row.fetchAll(db, sql: """
          SELECT round, \(column) AS v FROM contributions WHERE late = 0 AND \(column) IS NOT NULL AND round IN
            (SELECT DISTINCT round FROM contributions WHERE late = 0 AND \(column) IS NOT NULL ORDER BY round DESC LIMIT ?)
          ORDER BY round
          """, arguments: [rounds])
      }
      var out: [(Int, [Float])] = []
      for r in rows {
        let (round, v): (Int, Double) = (r["round"], r["v"])
        if out.last?.0 == round { out[out.count - 1].1.append(Float(v)) } else { out.append((round, [Float(v)])) }
      }
      return out.map(\.1)
    }
    return (try recent("norm"), try recent("cosine"))
  }
}
