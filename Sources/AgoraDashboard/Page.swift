/// The dashboard page: static HTML and a few lines of script that poll `/api/v1` every two seconds and
/// redraw the tables and plots in place (no reload, no framework, nothing fetched from elsewhere).
enum Page {
  static func html(federation: String, tryModelTokens: Int? = nil) -> String {
    // The "try the model" box, when the coordinator allows it: a prompt, and the latest version's completion
    // streamed into #completion (data-done="yes" once it has ended). `#try=TEXT` in the address fills and runs it.
    let tryBox = tryModelTokens.map { n in
      """
      <h2>Try the model</h2>
      <p class="muted">The latest version continues your prompt (at most \(n) new tokens, one generation at a time).</p>
      <form id="try-form"><textarea id="prompt" rows="2" style="width:100%" placeholder="Die Datei wird"></textarea>
      <button id="try" type="submit">Generate</button> <span id="try-status" class="muted"></span></form>
      <pre id="completion" style="white-space:pre-wrap;background:#f6f6f6;padding:.5rem;min-height:2rem"></pre>
      """
    } ?? ""
    let tryScript = tryModelTokens == nil ? "" : """
    async function tryModel(prompt) {
      const out = document.getElementById("completion"), status = document.getElementById("try-status");
      out.dataset.done = "no"; out.textContent = ""; status.textContent = "generating…";
      try {
        const r = await fetch("api/v1/generate" + q, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({prompt})});
        if (!r.ok) { status.textContent = "refused: " + r.status + " " + await r.text(); out.dataset.done = "refused"; return; }
        status.textContent = "version " + ((r.headers.get("Content-Location") ?? "").split("/").pop() || "?") + ":";
        out.append(document.createTextNode(prompt));
        const reader = r.body.getReader(), dec = new TextDecoder();
        for (;;) { const {done, value} = await reader.read(); if (done) break; out.append(document.createTextNode(dec.decode(value, {stream: true}))); }
        out.dataset.done = "yes";
      } catch (e) { status.textContent = "failed: " + e.message; out.dataset.done = "failed"; }
    }
    document.getElementById("try-form").addEventListener("submit", e => { e.preventDefault(); tryModel(document.getElementById("prompt").value); });
    { const m = location.hash.match(/^#try=(.*)$/); if (m) { const p = decodeURIComponent(m[1]); document.getElementById("prompt").value = p; tryModel(p); } }
    """
    return """
    <!doctype html>
    <html lang="en"><head><meta charset="utf-8"><title>Agora — \(Plots.esc(federation))</title>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <style>
    body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; max-width: 1100px; }
    h1 { font-size: 1.4rem; margin: 0 0 .3rem; } h2 { font-size: 1.1rem; margin: 1.4rem 0 .4rem; }
    table { border-collapse: collapse; width: 100%; font-size: .85rem; } td, th { border-bottom: 1px solid #e4e4e4; padding: .25rem .4rem; text-align: left; }
    th { background: #f6f6f6; } .num { text-align: right; font-variant-numeric: tabular-nums; } code { font-size: .8rem; }
    .bar { background: #eee; height: 14px; border-radius: 7px; overflow: hidden; width: 320px; display: inline-block; vertical-align: middle; }
    .bar > div { background: #2ca02c; height: 100%; } .plots img { max-width: 49%; border: 1px solid #eee; }
    .muted { color: #777; }
    </style></head>
    <body>
    <h1>Agora federation <code id="fed">\(Plots.esc(federation))</code></h1>
    <div id="overview" class="muted">loading…</div>
    <h2>Rounds</h2>
    <div class="plots"><img id="plot-bpb" alt="bits per byte by language" src="plots/bits-per-byte.svg"><img id="plot-loss" alt="mean node loss by round" src="plots/loss.svg"></div>
    <table id="rounds"><thead><tr><th>round</th><th>outcome</th><th class="num">selected</th><th class="num">accepted</th><th class="num">rejected</th><th class="num">late</th><th class="num">seconds</th></tr></thead><tbody></tbody></table>
    <h2>Quality on the institutions' own text</h2>
    <p class="muted">Each institution scores every version on its own validation text; only these signed numbers leave it.</p>
    <div class="plots"><img id="plot-inst" alt="bits per byte on the institutions' own text" src="plots/institutions.svg"></div>
    <table id="institutions"><thead><tr><th>language</th><th>institution</th><th class="num">latest</th><th class="num">version</th><th class="num">best</th><th class="num">version</th><th class="num">trained alone</th></tr></thead><tbody></tbody></table>
    <h2>Nodes — contributors</h2>
    <table id="nodes"><thead><tr><th>node</th><th>role</th><th>languages</th><th>status</th><th>last heartbeat</th><th class="num">rounds joined</th><th class="num">missed</th><th class="num">tokens</th><th class="num">CPU-s</th></tr></thead><tbody></tbody></table>
    <h2>Invitations — compute donors who enrol themselves</h2>
    <table id="invitations"><thead><tr><th>invitation</th><th>status</th><th class="num">uses taken</th><th>expires</th><th>donors enrolled</th></tr></thead><tbody></tbody></table>
    <h2>Versions</h2>
    <table id="versions"><thead><tr><th>version</th><th>round</th><th>parent</th><th>hash</th><th class="num">contributors</th><th class="num">tokens</th><th class="num">mean bits/byte</th><th class="num">privacy ε</th><th>training content</th></tr></thead><tbody></tbody></table>
    <div id="version" class="muted">Select a version for its lineage, signature and training-data summary.</div>
    \(tryBox)
    <script>
    const q = location.search.includes("token=") ? location.search : "";
    const esc = s => String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
    const get = p => fetch(p + q).then(r => { if (!r.ok) throw new Error(p + ": " + r.status); return r.json(); });
    const rows = (id, list, f) => { document.querySelector("#" + id + " tbody").innerHTML = list.map(x => "<tr>" + f(x).join("") + "</tr>").join(""); };
    const td = (v, num) => "<td" + (num ? " class=num" : "") + ">" + esc(v) + "</td>";
    let lastRounds = -1;
    async function show(n) {
      const d = await get("api/v1/versions/" + n), s = d.summary;
      const sig = d.signatureValid == null ? "not checked" : (d.signatureValid ? "valid" : "INVALID");
      document.getElementById("version").innerHTML = "<h2>Version " + n + "</h2><p>hash <code>" + esc(d.version.hash) + "</code> · signature <b>" + sig +
        "</b> · lineage " + d.lineage.map(esc).join(" ← ") + "</p><p>Training data: " + s.tokens + " tokens in rounds " + s.rounds.join(", ") + "; " +
        Object.entries(s.tokensPerLanguage).map(([l, t]) => esc(l) + " " + t).join(", ") + "</p><table><tr><th>contributor</th><th>role</th><th class=num>rounds</th><th class=num>tokens</th><th>languages</th><th class=num>CPU-s</th></tr>" +
        s.contributors.map(c => "<tr>" + td(c.name) + td(c.role) + td(c.rounds, 1) + td(c.tokens, 1) + td(Object.entries(c.tokensPerLanguage).map(([l, t]) => l + " " + t).join(", ")) + td(c.seconds.toFixed(0), 1) + "</tr>").join("") + "</table>" +
        "<p>Public summary of training content (AI Act): <a href='api/v1/versions/" + n + "/training-content" + q + "'>Markdown</a> · <a href='api/v1/versions/" + n + "/training-content" + (q ? q + "&" : "?") + "format=json'>JSON</a></p>" +
        "<h2>Model card</h2><pre id=card style='white-space:pre-wrap;font-size:.8rem'></pre>";
      const card = await fetch("api/v1/versions/" + n + "/card" + q);
      document.getElementById("card").textContent = card.ok ? await card.text() : "(no model card: " + card.status + ")";
    }
    async function refresh() {
      const [o, nodes, rounds, versions, inst, inv] = await Promise.all([get("api/v1/overview"), get("api/v1/nodes"), get("api/v1/rounds"), get("api/v1/versions"), get("api/v1/institutions"), get("api/v1/invitations")]);
      const l = o.live, pct = l.expected ? Math.round(100 * l.received / l.expected) : 0;
      const left = l.deadline ? Math.max(0, Math.round(l.deadline - Date.now() / 1000)) + " s to the deadline" : "";
      document.getElementById("overview").innerHTML = (l.round ? "Round <b>" + l.round + "</b>: " + l.received + " of " + l.expected +
        " updates <span class=bar><div style='width:" + pct + "%'></div></span> " + left : "No round in progress") +
        " · version <b>" + l.version + "</b> · " + l.nodes.length + " nodes connected · " + o.rounds + " rounds recorded" +
        (o.model ? "<br>" + esc(o.model) : "");
      rows("rounds", rounds.slice().reverse(), r => [td(r.number, 1), td(r.outcome), td(r.selected, 1), td(r.accepted, 1), td(r.rejected, 1), td(r.late, 1), td((r.ended_at - r.started_at).toFixed(1), 1)]);
      rows("nodes", nodes, n => [td(n.name), td(n.role), td(n.languages.join(", ")), td(n.connected ? "connected" : n.status), td(n.lastSeen ? new Date(n.lastSeen * 1000).toLocaleTimeString() : "—"),
        td(n.roundsJoined, 1), td(n.roundsMissed, 1), td(n.tokens, 1), td(n.cpuSeconds.toFixed(0), 1)]);
      rows("invitations", inv, x => ["<td><code>" + esc(x.id) + "</code></td>", td(x.status), td(x.used + " / " + x.uses, 1), td(new Date(x.expiresAt * 1000).toLocaleString()),
        td(x.donors.map(d => d.name).join(", ") || "—")]);
      rows("institutions", inst, x => [td(x.language), td(x.name), td(x.latest.toFixed(3), 1), td(x.latestVersion, 1), td(x.best.toFixed(3), 1), td(x.bestVersion, 1), td(x.alone == null ? "—" : x.alone.toFixed(3), 1)]);
      rows("versions", versions.slice().reverse(), v => ["<td class=num><a href='#v" + v.number + "' onclick='show(" + v.number + ")'>" + v.number + "</a></td>", td(v.round, 1), td(v.parent ?? "—", 1), "<td><code>" + esc(v.hash.slice(0, 16)) + "</code></td>",
        td(v.contributors, 1), td(v.tokens, 1), td(v.mean_bits_per_byte == null ? "—" : v.mean_bits_per_byte.toFixed(3), 1),
        td(v.dp_epsilon == null ? "—" : v.dp_epsilon.toPrecision(3) + " (δ " + v.dp_delta + ")", 1),
        "<td><a href='api/v1/versions/" + v.number + "/training-content" + q + "'>summary</a></td>"]);
      if (rounds.length !== lastRounds) {
        lastRounds = rounds.length;
        for (const [id, p] of [["plot-bpb", "plots/bits-per-byte.svg"], ["plot-loss", "plots/loss.svg"], ["plot-inst", "plots/institutions.svg"]]) document.getElementById(id).src = p + (q ? q + "&" : "?") + "n=" + lastRounds;
      }
    }
    for (const img of document.querySelectorAll(".plots img")) img.addEventListener("load", () => { img.dataset.loaded = img.naturalWidth > 0 ? "yes" : "empty"; });
    refresh().then(() => { document.body.dataset.refreshed = "yes"; const m = location.hash.match(/^#v([0-9]+)$/); if (m) show(+m[1]); });
    \(tryScript)
    setInterval(() => refresh().catch(e => { document.getElementById("overview").textContent = "cannot reach the coordinator: " + e.message; }), 2000);
    </script>
    </body></html>
    """
  }
}
