import AgoraCrypto
import ArgumentParser

struct Keygen: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Create an identity: signing and CURVE keys (mode 0600) and a public enrolment card (card.toml).")

  @Option(help: "Directory for the keys and the card (created; existing keys are never overwritten).")
  var out: String

  @Option(help: "Display name, e.g. \"Charles University\".")
  var name: String

  @Option(help: "Institution (defaults to the name).")
  var institution: String?

  @Option(help: "Contact address of the people running this node.")
  var contact: String = ""

  @Flag(help: "Also create the aggregation key that nodes seal their updates to (for a coordinator).")
  var coordinator = false

  func validate() throws {
    guard !name.trimmingCharacters(in: .whitespaces).isEmpty else { throw ValidationError("--name must not be empty") }
  }

  func run() throws {
    do {
      let id = try Identity.generate(in: out, name: name, institution: institution ?? name, contact: contact, coordinator: coordinator)
      print("identity written to \(out): \(Identity.signFile), \(Identity.curveFile)\(coordinator ? ", \(Identity.aggregationFile)" : "") (0600) and \(Identity.cardFile)")
      print("fingerprint \(id.card.fingerprint)")
    } catch let e as IdentityError {
      throw CLIError(e.description)
    }
  }
}
