import AgoraCrypto
import AgoraTransport
import AgoraText
import Foundation
import TOMLKit

/// An invitation as `agora invite` writes it and `agora donate` reads it (SPEC §2.2): where the coordinator
/// listens, its card, the signed token and the secret half of the invitation's CurveZMQ key. Whoever holds the
/// file can enrol a compute donor (as many times as the token allows, until it expires): it is written with mode
/// 0600 and handed over like a password.
public struct InvitationFile: Equatable, Sendable {
  public var federation: String
  public var endpoint: String
  public var token: InvitationToken
  /// The invitation key's X25519 secret (its public half is in the token).
  public var inviteSecret: [UInt8]
  /// The coordinator's enrolment card (TOML), as `agora keygen --coordinator` wrote it.
  public var coordinatorCard: String
  /// Where the federation's dashboard answers, if its coordinator serves one (donors read their rank there).
  public var dashboard: String?

  public init(federation: String, endpoint: String, token: InvitationToken, inviteSecret: [UInt8], coordinatorCard: String, dashboard: String?) {
    self.federation = federation; self.endpoint = endpoint; self.token = token; self.inviteSecret = inviteSecret
    self.coordinatorCard = coordinatorCard; self.dashboard = dashboard
  }

  public func toml() -> String {
    let t = TOMLTable()
    t["federation"] = federation
    t["endpoint"] = endpoint
    t["expires"] = ISO8601DateFormatter().string(from: token.expiryDate)
    t["uses"] = Int(token.uses)
    t["token"] = hex(token.bytes)
    t["invite_secret"] = hex(inviteSecret)
    if let dashboard { t["dashboard"] = dashboard }
    t["coordinator_card"] = coordinatorCard
    return "# Agora invitation to donate compute to federation \(jsonString(federation)): \(token.uses) use\(token.uses == 1 ? "" : "s") until "
      + ISO8601DateFormatter().string(from: token.expiryDate) + ".\n# Whoever holds this file can enrol: keep it like a password. "
      + "To donate: agora donate THIS-FILE\n" + t.convert(to: .toml) + "\n"
  }

  /// Reads and checks an invitation file: every field present and of its form, the token signed by the card's
  /// key for the federation, the secret the token's key's.
  public static func load(_ path: String) throws -> InvitationFile {
    func fail(_ key: String, _ problem: String) -> ConfigError { ConfigError(file: path, key: key, problem: problem) }
    guard let d = FileManager.default.contents(atPath: path) else { throw fail("-", "cannot read the file") }
    let t: TOMLTable
    do { t = try TOMLTable(string: String(decoding: d, as: UTF8.self)) } catch { throw fail("-", "not an invitation (not TOML: \(error))") }
    func string(_ k: String) throws -> String {
      guard let s = t[k]?.string else { throw fail(k, "missing (a string)") }
      return s
    }
    let known: Set<String> = ["federation", "endpoint", "expires", "uses", "token", "invite_secret", "dashboard", "coordinator_card"]
    if let k = t.keys.sorted().first(where: { !known.contains($0) }) { throw fail(k, "not a key of an invitation file") }
    let fed = try string("federation"), endpoint = try string("endpoint")
    guard endpoint.hasPrefix("tcp://") else { throw fail("endpoint", "expected tcp://HOST:PORT") }
    guard let tb = unhex(try string("token")) else { throw fail("token", "not hexadecimal") }
    let token: InvitationToken
    do { token = try InvitationToken.parse(tb) } catch { throw fail("token", "\(error)") }
    guard let secret = unhex(try string("invite_secret")), secret.count == 32 else { throw fail("invite_secret", "expected 64 hexadecimal digits") }
    guard (try? Sodium.boxPublicKey(secretKey: secret)) == token.inviteKey else { throw fail("invite_secret", "is not the secret of the token's invitation key") }
    let cardText = try string("coordinator_card")
    let card: EnrolmentCard
    do { card = try EnrolmentCard.parse(toml: cardText, path: path + " (coordinator_card)") } catch { throw fail("coordinator_card", "\(error)") }
    guard token.verify(federation: fed, coordinatorKey: card.signPublic) else {
      throw fail("token", "not signed by the coordinator whose card the file holds, for federation \(jsonString(fed))")
    }
    return InvitationFile(federation: fed, endpoint: endpoint, token: token, inviteSecret: secret, coordinatorCard: cardText, dashboard: t["dashboard"]?.string)
  }
}
