import AgoraCrypto
@testable import AgoraDisclosure
import AgoraTestSupport
import AgoraText
import Foundation
import Testing

/// Declarations (files, checks, bytes, signatures) and the public summary compiled from them.
@Suite struct DeclarationTests {
  static let complete = """
    declarant = "Université Paris-Saclay"

    [[source]]
    languages = ["fr", "it"]
    category = "public_dataset"
    name = "Wikipedia dumps"
    url = "https://dumps.wikimedia.org/"
    description = "Encyclopaedia articles"
    license = "CC-BY-SA-4.0"
    content_types = ["encyclopaedia"]
    collection_start = "2026-01"
    collection_end = "2026-03-31"
    tdm_opt_outs = "Not crawled: a dump published for reuse"
    illegal_content = "Articles deleted by Wikipedia's own process are not in the dump"
    personal_data = "Biographies of public persons as published"

    [[source]]
    languages = ["fr"]
    category = "private_third_party"
    confidential = true
    description = "Support tickets of a telecom operator, obtained under contract"
    content_types = ["customer support"]
    collection_end = "2026-06"
    tdm_opt_outs = "Not applicable: obtained by contract"
    illegal_content = "Reviewed by the operator"
    personal_data = "Pseudonymised before use"
    """

  func write(_ text: String) throws -> String {
    let d = try temporaryDirectory("agora-declaration")
    try text.write(toFile: d + "/declaration.toml", atomically: true, encoding: .utf8)
    return d + "/declaration.toml"
  }

  @Test func aCompleteFileReadsAndLacksNothing() throws {
    let d = try DeclarationFile.load(try write(Self.complete))
    #expect(d.sources.count == 2)
    #expect(d.sources[1].confidential && d.sources[1].name == nil && d.sources[1].shownName.contains("withheld"))
    #expect(d.missing(trained: ["fr", "it"]).isEmpty)
    // A language no source covers, and a node that holds only Italian sends only the source that covers it.
    #expect(d.missing(trained: ["fr", "pl"]) == ["language pl: no declared source covers it"])
    #expect(d.covering(["it"]).sources.map(\.name) == ["Wikipedia dumps"])
    // The bytes sent parse back to the same declaration.
    #expect(try Declaration.parse(try d.json(), source: "test") == d)
  }

  @Test func aWrittenFileReadsBackTheSame() throws {
    var d = try DeclarationFile.load(try write(Self.complete))
    d.sources[0].description = "Quotes \" and a backslash \\, a tab\tand\na second line, ü, 東京"
    d.sources[0].domains = ["a.example", "b.example"]
    let back = try DeclarationFile.load(try write(DeclarationFile.toml(d, comment: "written by a test\nsecond line")))
    #expect(back == d)
  }

  @Test func whatAReleaseNeedsIsNamedSourceBySource() throws {
    let d = try DeclarationFile.load(try write("""
      declarant = "X"
      [[source]]
      languages = ["de"]
      category = "crawled"
      name = "Our crawl"
      """))
    let m = d.missing(trained: ["de"])
    for key in ["description", "content_types", "collection_end", "tdm_opt_outs", "illegal_content", "personal_data", "crawler", "collection_start", "domains"] {
      #expect(m.contains { $0.hasPrefix("source[0].\(key):") }, "\(key) should be missing: \(m)")
    }
    #expect(!m.contains { $0.hasPrefix("source[0].name") })
    #expect(!m.contains { $0.hasPrefix("source[0].license") })  // a licence is asked of public and licensed data only
  }

  @Test(arguments: [
    ("declarant = \"X\"\nsources = []", "sources", "did you mean source?"),
    ("declarant = \"X\"\n[[source]]\nlanguages = [\"de\"]\ncategory = \"crawled\"\nlicence = \"MIT\"", "source[0].licence", "did you mean license?"),
    ("declarant = \"X\"\n[[source]]\nlanguages = [\"de\"]\ncategory = \"scraped\"", "source[0].category", "is not one of"),
    ("declarant = \"X\"\n[[source]]\nlanguages = [\"de\"]\ncategory = \"other\"\nlicense = \"GPL 3\"", "source[0].license", "not an SPDX"),
    ("declarant = \"X\"\n[[source]]\nlanguages = [\"de\"]\ncategory = \"other\"\ncollection_end = \"2026-13-01\"", "source[0].collection_end", "not a date"),
    ("declarant = \"X\"\n[[source]]\nlanguages = [\"de\"]\ncategory = \"other\"\ncollection_start = \"2026-05\"\ncollection_end = \"2026-01\"", "source[0].collection_start", "after collection_end"),
    ("declarant = \"X\"\n[[source]]\nlanguages = [\"DE\"]\ncategory = \"other\"", "source[0].languages", "not a language name"),
    ("declarant = \"X\"\n[[source]]\nlanguages = [\"de\"]\ncategory = \"other\"\nconfidential = true\nname = \"Secret Corp\"", "source[0].name", "confidential"),
    ("declarant = \"X\"\n[[source]]\nlanguages = [\"de\"]\ncategory = \"public_dataset\"\nconfidential = true", "source[0].confidential", "cannot be declared"),
    ("declarant = \"X\"\n[[source]]\nlanguages = [\"de\"]\ncategory = \"other\"\nurl = \"ftp://x\"", "source[0].url", "not an http"),
    ("declarant = 3\n[[source]]", "declarant", "missing"),
    ("declarant = \"X\"\n[[source]]\nlanguages = [\"de\"]\ncategory = \"other\"\ncontent_types = \"news\"", "source[0].content_types", "list of strings"),
  ])
  func aFaultyFileIsRefusedNamingTheKey(text: String, key: String, problem: String) throws {
    let path = try write(text)
    do {
      _ = try DeclarationFile.load(path)
      Issue.record("\(key) should have been refused")
    } catch let e as DeclarationError {
      #expect(e.file == path)
      #expect(e.key == key)
      #expect(e.problem.contains(problem), "\(e.problem)")
    }
  }

  @Test func theSignatureCoversFederationAndEveryOctet() throws {
    let d = try DeclarationFile.load(try write(Self.complete))
    let json = try d.json()
    let me = try Sodium.signKeypair(), other = try Sodium.signKeypair()
    let sig = try Sodium.sign(Declaration.statement(federation: "f", payload: json), secretKey: me.secretKey)
    #expect(Sodium.verify(sig, message: Declaration.statement(federation: "f", payload: json), publicKey: me.publicKey))
    #expect(!Sodium.verify(sig, message: Declaration.statement(federation: "f", payload: json), publicKey: other.publicKey))
    #expect(!Sodium.verify(sig, message: Declaration.statement(federation: "g", payload: json), publicKey: me.publicKey))
    var altered = json
    altered[altered.count / 2] ^= 1
    #expect(!Sodium.verify(sig, message: Declaration.statement(federation: "f", payload: altered), publicKey: me.publicKey))
  }

  @Test func malformedBytesAreATypedError() {
    for bytes in [Array("not json".utf8), Array("{\"format\":\"agora-declaration-1\",\"declarant\":\"x\"}".utf8),
                  Array("{\"format\":\"other\",\"declarant\":\"x\",\"sources\":[]}".utf8), [UInt8](repeating: 0x20, count: Declaration.maxBytes + 1)] {
      #expect(throws: DeclarationError.self) { _ = try Declaration.parse(bytes, source: "wire") }
    }
  }

  @Test func spdxExpressions() {
    for ok in ["MIT", "GPL-3.0-or-later", "(MIT OR Apache-2.0) AND CC-BY-4.0", "GPL-2.0-only WITH Classpath-exception-2.0", "LicenseRef-contract-2026"] {
      #expect(SPDX.isExpression(ok), "\(ok)")
    }
    for bad in ["", "GPL 3", "MIT OR", "(MIT", "MIT)", "AND MIT", "MIT/Apache"] { #expect(!SPDX.isExpression(bad), "\(bad)") }
  }

  @Test func debianCopyrightFilesGiveSPDX() throws {
    let dep5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\nFiles: *\nCopyright: A\nLicense: GPL-3+\n\nFiles: po/*\nCopyright: B\nLicense: GPL-3+\n\nFiles: debian/*\nCopyright: C\nLicense: GPL-2+\n"
    #expect(DebianSource.spdx(copyright: dep5) == "GPL-3.0-or-later")
    #expect(DebianSource.spdx(copyright: dep5.replacingOccurrences(of: "Files: po/*\nCopyright: B\nLicense: GPL-3+", with: "Files: po/*\nCopyright: B\nLicense: Expat")) == "GPL-3.0-or-later AND MIT")
    #expect(DebianSource.spdx(copyright: dep5.replacingOccurrences(of: "License: GPL-3+\n\nFiles: po", with: "License: Frobnicate\n\nFiles: po")) == nil)
    #expect(DebianSource.spdx(copyright: "The Guide is licensed under the terms of the GNU GPL, version 2.\n") == "GPL-2.0-only")
    #expect(DebianSource.spdx(copyright: "under the GNU General Public License, version 3, or (at your option) any later version") == "GPL-3.0-or-later")
    #expect(DebianSource.spdx(copyright: "All rights reserved.") == nil)
    // The packages the demo's text comes from, as this machine has them.
    if FileManager.default.fileExists(atPath: "/usr/share/doc/manpages-fr/copyright") {
      #expect(try DebianSource.read("manpages-fr").license == "GPL-3.0-or-later")
      #expect(try DebianSource.read("installation-guide-amd64").license == "GPL-2.0-only")
    }
  }
}

/// The summary: every section of the template, from the declarations of exactly the contributors given.
@Suite struct ContentSummaryTests {
  func signed(_ d: Declaration, at t: Double = 1) throws -> SignedDeclaration {
    let json = try d.json()
    return SignedDeclaration(hash: hex(Sodium.blake2b(json)), signature: String(repeating: "ab", count: 64), recordedAt: t, declaration: d)
  }

  static let provider = Provider(name: "Consortium", contact: "ops@consortium.eu", modelName: "euro-7b", license: "Apache-2.0", placedOnMarket: "2026-12-01")

  func input() throws -> SummaryInput {
    let dir = try temporaryDirectory("agora-declaration")
    try DeclarationTests.complete.write(toFile: dir + "/a.toml", atomically: true, encoding: .utf8)
    let a = try DeclarationFile.load(dir + "/a.toml")
    let news = Declaration(declarant: "B", sources: [
      DeclaredSource(languages: ["de"], category: .crawled, name: "News crawl", description: "News sites", modality: "text", contentTypes: ["news"],
                     collectionStart: "2025-01", collectionEnd: "2025-12", crawler: "AgoraBot/1.0", crawlerBehaviour: "honours robots.txt",
                     domains: ["zeit.de", "faz.net"], tdmOptOuts: "robots.txt and TDMRep honoured", illegalContent: "URL blocklists", personalData: "names of public persons"),
      DeclaredSource(languages: ["it"], category: .publicDataset, name: "Wikipedia dumps", url: "https://dumps.wikimedia.org/", description: "Encyclopaedia articles",
                     license: "CC-BY-SA-4.0", contentTypes: ["encyclopaedia"], collectionStart: "2026-01", collectionEnd: "2026-03-31",
                     tdmOptOuts: "Not crawled: a dump published for reuse", illegalContent: "Articles deleted by Wikipedia's own process are not in the dump",
                     personalData: "Biographies of public persons as published"),
    ])
    let pub = Declaration(declarant: "coordinator", sources: [
      DeclaredSource(languages: ["es"], category: .synthetic, name: "Generated dialogues", description: "Dialogues", contentTypes: ["dialogue"], collectionEnd: "2026-02",
                     generator: "agora-demo version 3", tdmOptOuts: "n/a: generated", illegalContent: "filtered by a classifier", personalData: "none"),
    ])
    return SummaryInput(federation: "euro", version: 7, hash: String(repeating: "c", count: 64), provider: Self.provider, base: nil, contributors: [
      SummaryContributor(name: "Paris-Saclay", fingerprint: String(repeating: "1", count: 64), role: "institution", tokensPerLanguage: ["fr": 600, "it": 400],
                         declarations: [try signed(a)]),
      SummaryContributor(name: "Heidelberg", fingerprint: String(repeating: "2", count: 64), role: "institution", tokensPerLanguage: ["de": 500, "it": 100],
                         declarations: [try signed(news)]),
      SummaryContributor(name: "Volunteer", fingerprint: String(repeating: "3", count: 64), role: "donor", tokensPerLanguage: ["es": 50], declarations: []),
    ], warmStartTokens: 1000, publicCorpus: try signed(pub), coordinator: String(repeating: "4", count: 64))
  }

  @Test func everySectionIsThereAndSaysWhatItHolds() throws {
    let s = TrainingContentSummary.compile(try input())
    #expect(s.releaseProblems.isEmpty, "\(s.releaseProblems)")
    // The same public dataset declared by two institutions is listed once, naming both.
    #expect(s.s21.sources.count == 1 && s.s21.sources[0].declaredBy == ["Heidelberg", "Paris-Saclay"])
    #expect(s.s222.used && s.s222.sources[0].name.contains("withheld") && s.s222.sources[0].declaredBy == ["Paris-Saclay"])
    #expect(s.s23.used && s.s23.sources[0].domains == ["zeit.de", "faz.net"] && s.s23.sources[0].crawler == "AgoraBot/1.0")
    #expect(s.s25.used && s.s25.sources[0].declaredBy == ["the coordinator's public corpus"])
    for empty in [s.s221, s.s24, s.s26] { #expect(!empty.used && empty.sources.isEmpty && empty.statement.hasPrefix("No ")) }
    #expect(s.s13.modalities.map(\.sizeRange) == ["Less than 1 billion tokens"] && s.s13.modalities[0].tokens == 600 + 400 + 500 + 100 + 50 + 1000)
    #expect(s.s13.languages.map(\.language) == ["de", "es", "fr", "it"])
    #expect(s.s13.latestCollectionDate == "2026-06")
    #expect(s.s31.measures.contains { $0.measures == "robots.txt and TDMRep honoured" })
    #expect(s.s33.declarations.count == 3)
    let json = try JSONSerialization.jsonObject(with: try s.json()) as! [String: Any]
    #expect(Set(json.keys) == ["agora", "1.1", "1.2", "1.3", "2.1", "2.2.1", "2.2.2", "2.3", "2.4", "2.5", "2.6", "3.1", "3.2", "3.3"])
    let md = s.markdown
    for heading in ["### 1.1 ", "### 1.2 ", "### 1.3 ", "### 2.1 ", "### 2.2.1 ", "### 2.2.2 ", "### 2.3 ", "### 2.4 ", "### 2.5 ", "### 2.6 ", "### 3.1 ", "### 3.2 ", "### 3.3 "] {
      #expect(md.contains(heading), "\(heading)")
    }
    #expect(!md.contains("Secret"))
  }

  @Test func onlyTheSourcesOfLanguagesTrainedInTheLineageAreListed() throws {
    var i = try input()
    // Heidelberg's updates in this lineage trained German only: its Italian source did not go into this version.
    i.contributors[1].tokensPerLanguage = ["de": 500]
    // Without a warm start the public corpus counts only for the donor's language (es): still its source.
    i.warmStartTokens = 0
    let s = TrainingContentSummary.compile(i)
    #expect(s.s21.sources.count == 1 && s.s21.sources[0].declaredBy == ["Paris-Saclay"] && s.s21.sources[0].languages == ["fr", "it"])
    #expect(s.s23.sources.map(\.languages) == [["de"]])
    #expect(s.s25.sources.count == 1)
    i.contributors.removeLast()  // no donor, no warm start: the public corpus is not in this version at all
    #expect(!TrainingContentSummary.compile(i).s25.used)
  }

  @Test func aReleaseNamesEachContributorAndFieldMissing() throws {
    var i = try input()
    i.provider = Provider(name: "Consortium")
    i.contributors[1].declarations = []
    i.publicCorpus = nil
    i.contributors[0].declarations[0].declaration.sources[0].license = nil
    let p = TrainingContentSummary.compile(i).releaseProblems
    #expect(p.contains("provider.contact: missing (the provider's contact)"))
    #expect(p.contains { $0.hasPrefix("provider.placed_on_market") })
    #expect(p.contains { $0.hasPrefix("contributor Heidelberg (2222222222222222): no declaration") })
    #expect(p.contains { $0.hasPrefix("contributor Paris-Saclay") && $0.hasSuffix("source[0].license: missing (SPDX identifier)") })
    #expect(p.contains { $0.hasPrefix("the coordinator's public corpus") && $0.contains("no declaration") })
    // Nobody used the public corpus: then it needs no declaration.
    i.warmStartTokens = 0
    i.contributors.removeLast()
    #expect(!TrainingContentSummary.compile(i).releaseProblems.contains { $0.hasPrefix("the coordinator's public corpus") })
  }

  @Test func theJSONValidatesAgainstTheCommittedSchema() throws {
    let python = ProcessInfo.processInfo.environment["AGORA_PYTHON"] ?? repoRoot + "/.venv/bin/python"
    try #require(FileManager.default.isExecutableFile(atPath: python), "no Python environment at \(python): run scripts/setup --python")
    let dir = try temporaryDirectory("agora-summary-schema")
    var full = TrainingContentSummary.compile(try input())
    var empty = try input()
    empty.contributors = []
    empty.warmStartTokens = 0
    empty.provider = Provider()
    let sparse = TrainingContentSummary.compile(empty)
    for (name, s) in [("full", full), ("sparse", sparse)] { try s.json().write(to: URL(fileURLWithPath: "\(dir)/\(name).json")) }
    let check = "import json, sys, jsonschema\nschema = json.load(open(sys.argv[1]))\njsonschema.Draft202012Validator.check_schema(schema)\n"
      + "for f in sys.argv[2:]:\n    jsonschema.Draft202012Validator(schema).validate(json.load(open(f)))\nprint('valid')"
    let schema = repoRoot + "/Protocol/training-content-summary.schema.json"
    let (status, out) = try runProcess(python, ["-c", check, schema, dir + "/full.json", dir + "/sparse.json"])
    #expect(status == 0 && out.contains("valid"), "\(out)")
    // The schema is not a rubber stamp: a summary without a section, or a used section without sources, fails it.
    full.s24.used = true
    try full.json().write(to: URL(fileURLWithPath: "\(dir)/bad.json"))
    let (bad, badOut) = try runProcess(python, ["-c", check, schema, dir + "/bad.json"])
    #expect(bad != 0, "\(badOut)")
    var object = try JSONSerialization.jsonObject(with: try sparse.json()) as! [String: Any]
    object["2.3"] = nil
    try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: "\(dir)/missing.json"))
    let (missing, _) = try runProcess(python, ["-c", check, schema, dir + "/missing.json"])
    #expect(missing != 0)
  }
}
