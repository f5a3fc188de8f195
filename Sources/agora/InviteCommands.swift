import AgoraCoordinator
import AgoraCrypto
import AgoraNode
import AgoraRegistry
import AgoraRounds
import AgoraServices
import AgoraText
import ArgumentParser
import Foundation
import Logging

struct InviteCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "invite",
    abstract: "Invite compute donors: write an invitation file (a signed one-time enrolment token), list invitations, or revoke one.",
    discussion: "The file lets whoever holds it enrol a donor with `agora donate FILE` (SPEC §2.2); it is written with mode 0600.")

  @OptionGroup var options: RegistryOptions

  @Option(help: "The role the invitation gives: donor (an institution enrols by sending its card).")
  var role: String = "donor"

  @Option(help: "How many donors may enrol with it (1 to 1000).")
  var uses: Int = 1

  @Option(help: ArgumentHelp("When it expires: a duration (30m, 12h, 7d) from now, or a date (2027-01-31 or 2027-01-31T12:00:00Z).", valueName: "when"))
  var expires: String = "7d"

  @Option(help: "Whom it is for (kept in the registry, never sent).")
  var note: String = ""

  @Option(help: "Where to write the invitation (default: invitation-ID.toml in the current directory).")
  var out: String?

  @Flag(help: "List the federation's invitations and the donors each enrolled.")
  var list = false

  @Option(help: ArgumentHelp("Revoke the invitation whose id starts with ID (at least 4 hexadecimal digits).", valueName: "id"))
  var revoke: String?

  func validate() throws {
    guard role == "donor" else { throw ValidationError("--role: an invitation enrols compute donors only (role donor); an institution enrols by sending its card") }
    guard (1...InvitationToken.maxUses).contains(uses) else { throw ValidationError("--uses must be 1 to \(InvitationToken.maxUses)") }
  }

  func run() throws {
    if list || revoke != nil {
      let (store, _) = try options.open()
      if let id = revoke {
        do {
          let r = try store.revokeInvitation(id)
          print("invitation \(r.id) revoked (\(r.used) of \(r.uses) uses taken); a running coordinator refuses its key at once")
        } catch let e as InvitationRefusal { throw CLIError("\(e) (agora invite --list shows the ids)") }
        return
      }
      let now = Date().timeIntervalSince1970
      let invited = try store.invited()
      print("id       | status  | uses  | expires              | note")
      for r in try store.invitations() {
        print("\(r.id.prefix(8)) | \(r.status(at: now).padding(toLength: 7, withPad: " ", startingAt: 0)) | " + pad("\(r.used)/\(r.uses)", 5) + " | "
              + formatDate(r.expiresAt) + " | " + Printable.line(r.note))
        for d in invited where d.invitation == r.id { print("         enrolled \(Printable.line(d.name)) (\(d.node.prefix(16))) from \(Printable.line(d.address)) at \(formatDate(d.at))") }
      }
      return
    }
    let cfg: CoordinatorConfig
    do { cfg = try CoordinatorConfig(path: options.config) } catch let e as ConfigError { throw CLIError(e.description) }
    let when = try InviteCommand.expiry(expires)
    do {
      let (record, file) = try Invitations.issue(config: cfg, uses: uses, expires: when, note: note)
      let path = out ?? "invitation-\(record.id.prefix(8)).toml"
      let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
      guard fd >= 0 else { throw CLIError("\(path): cannot create it (\(String(cString: strerror(errno)))); an existing file is never overwritten") }
      let h = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
      try h.write(contentsOf: Data(file.toml().utf8))
      try h.synchronize()
      print("invitation \(record.id) written to \(path) (mode 0600): \(uses) use\(uses == 1 ? "" : "s") until \(formatDate(record.expiresAt)); "
            + "give it to the donor, who runs: agora donate \(path)")
    } catch let e as ConfigError { throw CLIError(e.description) } catch let e as InvitationError { throw CLIError(e.description) }
  }

  /// A duration from now (30m, 12h, 7d) or an ISO 8601 date or date-time (UTC).
  static func expiry(_ s: String) throws -> Date {
    let units: [Character: Double] = ["m": 60, "h": 3600, "d": 86400]
    if let u = s.last, let f = units[u], let n = Double(s.dropLast()), n > 0, n.isFinite { return Date(timeIntervalSinceNow: n * f) }
    let iso = ISO8601DateFormatter()
    if let d = iso.date(from: s) { return d }
    iso.formatOptions = [.withFullDate]
    if let d = iso.date(from: s) { return d }
    throw CLIError("--expires \(s): expected a duration (30m, 12h, 7d) or a date (2027-01-31, 2027-01-31T12:00:00Z)")
  }
}

struct DonateCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "donate",
    abstract: "Donate compute with an invitation: make keys, enrol over the coordinator's CURVE channel, get the federation's settings, and train on the public shards it assigns.",
    discussion: "Run again with --dir to go on donating with the same identity.")

  @Argument(help: "The invitation file (from agora invite). Not needed once --dir holds an enrolled donor.")
  var invitation: String?

  @Option(help: "The donor's directory: keys, the federation's settings, work files (default: .agora/donate/FEDERATION).")
  var dir: String?

  @Option(help: "The name the federation shows for this donor.")
  var name: String?

  @Option(help: "A contact address for the coordinator's operators.")
  var contact: String = ""

  @Option(help: "Seconds to wait for the coordinator's answer to the enrolment.")
  var timeout: Double = 30

  @Flag(help: "Enrol and write the configuration, but do not start training.")
  var enrolOnly = false

  func run() async throws {
    setvbuf(stdout, nil, _IOLBF, 0)
    var dashboard: String? = nil
    let nodePath: String
    if let invitation {
      let invite: InvitationFile
      do { invite = try InvitationFile.load(invitation) } catch let e as ConfigError { throw CLIError(e.description) }
      dashboard = invite.dashboard
      let d = dir ?? ".agora/donate/" + invite.federation.filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }
      let host = ProcessInfo.processInfo.hostName
      do {
        let (path, new) = try DonorDirectory.prepare(invite: invite, dir: d, name: name ?? "Volunteer on \(host)", contact: contact, timeout: timeout)
        nodePath = path
        print(new ? "enrolled in \(invite.federation) as a compute donor; settings in \(d)" : "\(d) already holds an enrolled donor: donating again")
        if new { try Data((dashboard ?? "").utf8).write(to: URL(fileURLWithPath: d + "/dashboard")) }
      } catch let e as EnrolmentFailure { throw CLIError(e.description) } catch let e as IdentityError { throw CLIError(e.description) }
    } else if let dir {
      nodePath = dir + "/" + DonorDirectory.nodeFile
      guard FileManager.default.fileExists(atPath: nodePath) else { throw CLIError("\(dir) holds no enrolled donor: give the invitation file") }
      dashboard = (try? String(contentsOfFile: dir + "/dashboard", encoding: .utf8)).flatMap { $0.isEmpty ? nil : $0 }
    } else {
      throw CLIError("give an invitation file (agora donate FILE), or --dir of a donor enrolled before")
    }
    if enrolOnly { return }
    let cfg: NodeConfig
    do { cfg = try NodeConfig(path: nodePath) } catch let e as ConfigError { throw CLIError(e.description) }
    LoggingSystem.bootstrap { StreamLogHandler.standardOutput(label: $0) }
    let card = try EnrolmentCard.load(cfg.identity + "/" + Identity.cardFile)
    let progress = DonorProgress(fingerprint: card.fingerprint, dashboard: dashboard) { print($0) }
    let process: NodeProcess
    do { process = try NodeProcess(config: cfg, observer: progress, log: { print($0) }) } catch let e as ConfigError { throw CLIError(e.description) }
    try await process.run()
  }
}
