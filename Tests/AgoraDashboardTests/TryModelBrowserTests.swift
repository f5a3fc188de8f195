import AgoraHarness
import AgoraTestSupport
import Foundation
import Testing

/// The dashboard's "try the model" box of a real coordinator, in headless Chromium: behind the dashboard's
/// token, off unless coordinator.toml turns it on, streaming the latest version's completion into the page.
@Suite(.serialized) struct TryModelBrowserTests {
  func curl(_ args: [String]) throws -> (Int, String) {
    let (_, out) = try runProcess("/usr/bin/curl", ["-s", "-w", "\n%{http_code}"] + args)  // 000: no answer
    let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
    return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
  }

  @Test func theLatestVersionContinuesAPromptInThePage() throws {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    _ = try #require(chromium, "Chromium is missing: scripts/setup --python installs it")
    let h = try Harness(nodes: [("east", ["de"])], rounds: 1, innerSteps: 5, deadline: 60)
    defer { h.cleanup() }
    let port = h.port + 1 < 65535 ? h.port + 1 : h.port - 1
    let token = "try-the-model-0123456789"
    let file = h.dir + "/coordinator.toml"
    let base = try String(contentsOfFile: file, encoding: .utf8) + "\ndashboard = \"127.0.0.1:\(port)\"\ndashboard_token = \"\(token)\"\n"
    try (base + "[dashboard]\ntry_model = true\ntry_model_max_tokens = 24\n").write(toFile: file, atomically: true, encoding: .utf8)
    let c = try h.coordinator()  // version 0 exists once it listens; no node is needed to try it
    defer { if c.isRunning { c.terminate() } }
    let url = "http://127.0.0.1:\(port)/"
    #expect(waitUntil(30, every: 0.05) { (try? curl([url]))?.0 == 401 }, "the dashboard answers")

    // The API: the token is required; the completion streams as text with the version that wrote it.
    let (refused, _) = try curl(["-X", "POST", "-d", "{\"prompt\":\"Die\"}", url + "api/v1/generate"])
    #expect(refused == 401)
    let (ok, text) = try curl(["-X", "POST", "-H", "Authorization: Bearer \(token)", "-H", "Content-Type: application/json",
                               "-d", "{\"prompt\":\"Die Datei\",\"max_new_tokens\":500,\"temperature\":0}", "-D", "-", url + "api/v1/generate"])
    #expect(ok == 200 && text.lowercased().contains("content-location: /api/v1/versions/0"), "\(text)")
    let (bad, _) = try curl(["-X", "POST", "-H", "Authorization: Bearer \(token)", "-d", "{\"nope\":1}", url + "api/v1/generate"])
    #expect(bad == 400)

    // The page: #try=TEXT fills the box and runs it; the completion streams into #completion.
    let (dom, log) = try headlessChromium(url + "?token=\(token)#try=Die%20Datei%20wird", ["--dump-dom"], profile: h.dir + "/chromium", virtualTime: 8000)
    let completion = dom.components(separatedBy: "<pre id=\"completion\"").dropFirst().first?.components(separatedBy: "</pre>").first ?? ""
    #expect(completion.contains("data-done=\"yes\"") && completion.contains("Die Datei wird"), "the completion streamed into the page: \(completion.prefix(400))")
    #expect(completion.count > "data-done=\"yes\" style=\"\">Die Datei wird".count + 20, "new text after the prompt: \(completion.prefix(400))")
    #expect(dom.contains("version 0:"), "the page names the version")
    let consoleErrors = log.split(separator: "\n").filter { $0.contains("CONSOLE") && ($0.contains("Uncaught") || $0.contains("rror")) }
    #expect(consoleErrors.isEmpty, "console errors: \(consoleErrors)")

    // Off by default: without [dashboard] try_model the route answers 404 and the page has no box.
    c.terminate()
    c.waitUntilExit()
    try base.write(toFile: file, atomically: true, encoding: .utf8)
    let c2 = try h.coordinator(log: "coordinator2.log")
    defer { if c2.isRunning { c2.terminate() } }
    #expect(waitUntil(30, every: 0.05) { (try? curl([url]))?.0 == 401 }, "the dashboard answers again")
    let (off, _) = try curl(["-X", "POST", "-H", "Authorization: Bearer \(token)", "-d", "{\"prompt\":\"Die\"}", url + "api/v1/generate"])
    #expect(off == 404)
    let (_, page) = try curl(["-H", "Authorization: Bearer \(token)", url])
    #expect(!page.contains("id=\"completion\""))
  }
}
