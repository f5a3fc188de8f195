import Foundation

/// The federation's `[provider]` settings: who places the model on the market and under what name and licence
/// (the template's sections 1.1 and 1.2). Every field may be left out while the federation trains; `agora
/// export --release` names each one a release needs.
public struct Provider: Codable, Equatable, Sendable {
  public var name: String?
  public var contact: String?
  /// The authorised representative in the Union (name and contact), if the provider has one.
  public var representative: String?
  public var modelName: String?
  /// The model's licence (SPDX).
  public var license: String?
  /// When the model is (or was) placed on the Union market (YYYY-MM-DD), or `Provider.onRelease`: the day of
  /// `agora export --release`.
  public var placedOnMarket: String?
  public static let onRelease = "on release"
  /// Where the model and its summary are published (the model card links it).
  public var url: String?

  public init(name: String? = nil, contact: String? = nil, representative: String? = nil, modelName: String? = nil, license: String? = nil,
              placedOnMarket: String? = nil, url: String? = nil) {
    self.name = name; self.contact = contact; self.representative = representative; self.modelName = modelName; self.license = license
    self.placedOnMarket = placedOnMarket; self.url = url
  }

  /// Checks what is set: the licence is an SPDX expression, the date a date, the URL http(s).
  public func check(file: String) throws {
    if let l = license, !SPDX.isExpression(l) { throw DeclarationError(file: file, key: "provider.license", problem: "\"\(l)\" is not an SPDX licence expression") }
    if let d = placedOnMarket, d != Provider.onRelease, !(Declaration.isDate(d) && d.count == 10) {
      throw DeclarationError(file: file, key: "provider.placed_on_market", problem: "\"\(d)\" is not a date (YYYY-MM-DD) or \"\(Provider.onRelease)\"")
    }
    if let u = url, !(u.hasPrefix("https://") || u.hasPrefix("http://")) { throw DeclarationError(file: file, key: "provider.url", problem: "\"\(u)\" is not an http(s) URL") }
  }

  /// The settings a release needs and lacks, as "provider.key: why".
  public var missing: [String] {
    var out: [String] = []
    func need(_ v: String?, _ key: String, _ what: String) { if (v ?? "").trimmingCharacters(in: .whitespaces).isEmpty { out.append("provider.\(key): missing (\(what))") } }
    need(name, "name", "the provider's name")
    need(contact, "contact", "the provider's contact")
    need(modelName, "model_name", "the model's name")
    need(license, "license", "the model's licence, SPDX")
    need(placedOnMarket, "placed_on_market", "the date the model is placed on the market")
    return out
  }
}
