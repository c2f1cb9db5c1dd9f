import Foundation
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The web console in a real browser (headless Chromium through chromedriver) against a real
/// `sllm serve` with the real model: sign-in, a cold start's waterfall, the residency map, an
/// admin action and its refusal to a read-only key, the playground, keyboard navigation, and no
/// console errors. Screenshots of every view at desktop and phone widths go to
/// `$SLLM_TEST_ARTIFACTS/console` (else a temporary directory the run prints).
@Suite(.serialized) struct ConsoleBrowserTests {
    static let admin = "console-admin-key-0123456789"
    static let user = "console-user-key-0123456789"
    static let views = ["overview", "residency", "coldstarts", "instances", "migrations", "experiments", "playground"]

    @Test func theConsoleShowsALiveServerAndActsOnItInABrowser() async throws {
        guard Browser.executables() != nil else {
            print("skipped: chromium and chromedriver are not installed (.ci/run installs them)")
            return
        }
        let home = try TemporaryDirectory("console")
        defer { home.remove() }
        try await RealModel.link(into: home.path, as: "smollm2-135m")
        // A simulator run where the console looks for them (`<data-dir>/experiments/NAME`).
        let simulate = try await runSLLM(
            [
                "simulate", "--requests", "300", "--policies", "locality,random", "--out",
                home.file("experiments/small"),
            ],
            home: home.path)
        try #require(simulate.status == 0, "\(simulate.stderr)")
        let server = try ServeProcess(
            [
                "--port", "0", "--auth", "on", "--api-key", Self.user, "--admin-key", Self.admin, "--threads", "2",
                "--keep-alive", "10m",
            ], home: home.path)
        defer { server.stop() }
        let address = try #require(server.address(), "\(server.output)")
        let shots =
            ProcessInfo.processInfo.environment["SLLM_TEST_ARTIFACTS"].map { $0 + "/console" }
            ?? NSTemporaryDirectory() + "sllm-console-screenshots"
        try FileManager.default.createDirectory(atPath: shots, withIntermediateDirectories: true)
        print("console screenshots: \(shots)")

        let browser = try await Browser()
        do {
            try await exercise(browser, address: address, shots: shots, home: home.path)
        } catch {
            Issue.record("\(error)\n\(server.output.suffix(3000))")
        }
        await browser.quit()
    }

    private func exercise(_ browser: Browser, address: String, shots: String, home: String) async throws {
        // The server wants keys: the page asks for one before it calls anything.
        try await browser.open(address + "/")
        #expect(try await browser.waitFor("return !document.getElementById('login').hidden"))
        try await browser.screenshot(to: shots + "/login-desktop.png")
        try await signIn(browser, key: Self.admin)
        #expect(try await browser.run("return document.getElementById('role').textContent") as? String == "admin")

        // A cold start appears in the waterfall with its phases, and the placement beside it.
        let (status, _) = try await Self.complete(address, key: Self.user)
        #expect(status == 200)
        try await browser.click("#tab-coldstarts")
        let phases = """
            const rows = document.querySelectorAll('#waterfall tr[data-instance]');
            if (rows.length === 0) return false;
            const names = [...rows[0].querySelectorAll('rect[data-phase]')].map((r) => r.dataset.phase);
            return names.join(',') === 'queue,load,init,prefill' && rows[0].textContent.includes('single-node');
            """
        let waterfall = try await browser.waitFor(phases)
        let shown = try await text(browser, "#view-coldstarts")
        #expect(waterfall, "\(shown)")

        // The same prompt again hits the instance's prompt cache; the instances view shows it,
        // and the KV cache the kept sequence holds.
        #expect(try await Self.complete(address, key: Self.user).0 == 200)
        try await browser.click("#tab-instances")
        #expect(
            try await browser.waitFor(
                "const c = document.querySelector('#instances td[data-cache-hits]'); return !!c && c.dataset.cacheHits === '1' && c.textContent.startsWith('1 / 2')"
            ))
        #expect(
            try await browser.waitFor("return Number(document.querySelector('#instances td[data-kv]')?.dataset.kv) > 0")
        )

        // The simulator's run is plotted, one curve per policy, with this server's cold start over it.
        try await browser.click("#tab-experiments")
        #expect(
            try await browser.waitFor(
                "return document.querySelectorAll('svg.cdf[data-run=\"small\"] path[data-policy]').length === 2 && !!document.getElementById('live-small')"
            ))
        let runRows = try await browser.run(
            "return [...document.querySelectorAll('article[data-run=\"small\"] tr[data-policy]')].map((r) => r.dataset.policy).join(',')"
        )
        #expect(runRows as? String == "locality,random")
        let localityRow = try await text(browser, "article[data-run='small'] tr[data-policy='locality']")
        #expect(!localityRow.contains("—"), "every figure of the run is shown: \(localityRow)")
        #expect((try await text(browser, "#view-experiments")).contains("this server"))

        // The residency map shows the model in engine memory while its instance runs ...
        try await browser.click("#tab-residency")
        let tiers =
            "(document.querySelector('#residency tr[data-model=\"smollm2-135m\"] td[data-tiers]')?.dataset.tiers ?? '')"
        #expect(try await browser.waitFor("return \(tiers).split(' ').includes('engine')"))
        #expect((try await browser.run("return \(tiers)") as? String ?? "").contains("dram"))

        // ... and not once an admin stopped it from the instances view (an admin action).
        try await browser.click("#tab-instances")
        #expect(
            try await browser.waitFor("return document.querySelectorAll('#instances tr[data-instance]').length === 1"))
        try await browser.click("button[data-action='stop-instance']")
        #expect(try await browser.waitFor("return document.getElementById('notice').textContent.includes('done')"))
        #expect(
            try await browser.waitFor("return document.querySelectorAll('#instances tr[data-instance]').length === 0"))
        try await browser.click("#tab-residency")
        #expect(try await browser.waitFor("return !\(tiers).split(' ').includes('engine')"))
        // Evicting the model from the DRAM cache (another process, as an operator does) takes
        // the DRAM tier off the map; the SSD copy stays.
        let evict = try await runSLLM(["store", "evict", "smollm2-135m"], home: home)
        #expect(evict.status == 0, "\(evict.stderr)")
        #expect(try await browser.waitFor("return \(tiers) === 'ssd'"))

        // The playground streams an answer and shows its timings (a cold start: the instance stopped).
        try await browser.click("#tab-playground")
        #expect(try await browser.waitFor("return document.getElementById('chat-model').value === 'smollm2-135m'"))
        try await browser.click("#chat-send")
        #expect(try await browser.waitFor("return document.getElementById('chat-timings').dataset.done === 'true'"))
        let answer = try await text(browser, "#chat-answer")
        #expect(!answer.isEmpty)
        let timings = try await text(browser, "#chat-timings")
        #expect(timings.contains("yes, from"), "\(timings)")

        // Keyboard: the arrow keys move between the tabs, and focus is visible where it lands.
        try await browser.run(
            "document.getElementById('tab-overview').click(); document.getElementById('tab-overview').focus()")
        try await browser.press("\u{E014}")
        #expect(
            try await browser.run(
                "return document.activeElement.id + ' ' + document.getElementById('tab-residency').getAttribute('aria-selected')"
            ) as? String == "tab-residency true")

        // Text contrast passes WCAG AA on every view (4.5:1, 3:1 for large text); no view shows a
        // value the script failed to render (`null`, `undefined`, `NaN`, `[object …]`).
        for view in Self.views {
            try await browser.click("#tab-\(view)")
            let stray =
                try await browser.run(
                    "return (document.getElementById('view-' + arguments[0]).innerText.match(/\\b(null|undefined|NaN)\\b|\\[object /g) || []).join(' ')",
                    [view]) as? String
            #expect(stray == "", "\(view) shows \(stray ?? "?")")
            let failures = try await browser.run(Self.contrastCheck) as? [String] ?? ["no answer"]
            #expect(failures.isEmpty, "\(view): \(failures.prefix(5))")
        }

        // Every view at desktop and phone widths, with the cold starts recorded above.
        for (width, name) in [(1280, "desktop"), (390, "phone")] {
            try await browser.resize(width: width, height: 900)
            for view in Self.views {
                try await browser.click("#tab-\(view)")
                try await Task.sleep(for: .milliseconds(300))
                try await browser.screenshot(to: "\(shots)/\(view)-\(name).png")
                // Nothing is wider than the window (a table scrolls inside its own box).
                let overflow = try await browser.run("return document.documentElement.scrollWidth - window.innerWidth")
                #expect(
                    (overflow as? Int ?? 0) <= 1, "\(view) at \(width) px overflows by \(String(describing: overflow))")
            }
        }
        try await browser.resize(width: 1280, height: 900)

        // A read-only key looks but cannot act: the actions are disabled, and the API refuses it.
        try await browser.click("#signout")
        try await signIn(browser, key: Self.user)
        #expect(try await browser.run("return document.getElementById('role').textContent") as? String == "read-only")
        try await browser.click("#tab-instances")
        #expect(
            try await browser.waitFor(
                "const b = document.querySelector(\"button[data-action='stop']\"); return !!b && b.disabled && !!document.getElementById('read-only')"
            ))
        try await browser.screenshot(to: shots + "/instances-read-only-desktop.png")
        let refused = try await Self.post(address + "/admin/deployments/smollm2-135m/stop", key: Self.user)
        #expect(refused == 403)

        // No errors on the page's console through all of it.
        let errors = try await browser.consoleMessages().filter { $0.level == "SEVERE" }
        #expect(errors.isEmpty, "\(errors)")
    }

    /// `sllm status --watch` follows the event stream the console reads: a snapshot at once,
    /// then one when something changed (a cold start here); the stream and the snapshot take any
    /// key, no key gets a 401, and `/` is the console for a browser and JSON for others.
    @Test func statusWatchFollowsTheConsolesEventStream() async throws {
        let home = try TemporaryDirectory("console-watch")
        defer { home.remove() }
        try await RealModel.link(into: home.path, as: "smollm2-135m")
        let server = try ServeProcess(
            ["--port", "0", "--auth", "on", "--api-key", Self.user, "--admin-key", Self.admin, "--threads", "2"],
            home: home.path)
        defer { server.stop() }
        let address = try #require(server.address(), "\(server.output)")
        let port = Int(address.split(separator: ":").last!)!
        #expect(try rawRequestBlocking(port: port, "GET /admin/events HTTP/1.1\r\nHost: x\r\n\r\n").status == 401)
        let page = try rawRequestBlocking(port: port, "GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n")
        #expect(page.status == 200 && page.body.contains("data-keys=\"required\"") && page.body.contains("app.js"))
        let summary = try rawRequestBlocking(port: port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(summary.body.contains("\"events\":\"/admin/events\""))

        let watch = Process()
        watch.executableURL = sllmExecutable()
        watch.arguments = ["status", "--watch", "--json", "--server", address, "--api-key", Self.user]
        var environment = ProcessInfo.processInfo.environment
        environment["SLLM_HOME"] = home.path
        watch.environment = environment
        let output = Pipe()
        watch.standardOutput = output
        watch.standardError = FileHandle.nullDevice
        try watch.run()
        defer { if watch.isRunning { watch.terminate() } }
        let reader = output.fileHandleForReading
        /// The next snapshot line (on a thread of its own: the read blocks).
        func next() async throws -> [String: Any] {
            let line = try await onThread { () -> Data in
                var line = Data()
                while true {
                    let byte = reader.readData(ofLength: 1)
                    guard let first = byte.first else { throw TestSupportError("the watch ended") }
                    if first == 10 { return line }
                    line.append(first)
                }
            }
            return try JSONSerialization.jsonObject(with: line) as? [String: Any] ?? [:]
        }
        let first = try await next()
        #expect(first["access"] as? String == "user")
        let deployments = (first["snapshot"] as? [String: Any])?["deployments"] as? [[String: Any]] ?? []
        #expect(deployments.count == 1)
        #expect((first["snapshot"] as? [String: Any])?["cold_starts"] as? [Any] != nil)
        let (status, _) = try await Self.complete(address, key: Self.user)
        #expect(status == 200)
        var coldStarts: [[String: Any]] = []
        for _ in 0..<20 where coldStarts.isEmpty {
            coldStarts = (try await next()["snapshot"] as? [String: Any])?["cold_starts"] as? [[String: Any]] ?? []
        }
        #expect(coldStarts.first?["tier"] as? String == "ssd" || coldStarts.first?["tier"] as? String == "dram")
        #expect((coldStarts.first?["load_seconds"] as? Double ?? 0) > 0)
    }

    /// Every visible element with text of its own whose colour against its background falls
    /// short of WCAG AA (relative luminance contrast; backgrounds found up the tree; disabled
    /// controls are exempt, as WCAG exempts inactive components).
    static let contrastCheck = """
        const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
        const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
        const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
        const background = (element) => {
          for (let e = element; e; e = e.parentElement) {
            const c = parse(getComputedStyle(e).backgroundColor);
            if (c.length >= 3 && (c.length < 4 || c[3] > 0)) return c;
          }
          return [255, 255, 255];
        };
        const failures = [];
        for (const element of document.querySelectorAll('body *')) {
          if (!element.offsetParent || element.closest(':disabled') || element.closest('svg')) continue;
          const own = [...element.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
          if (!own) continue;
          const style = getComputedStyle(element);
          const a = luminance(parse(style.color)), b = luminance(background(element));
          const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
          const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
          const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
          if (ratio < needed) failures.push(`${element.tagName}.${element.className} "${element.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
        }
        return failures;
        """

    private func signIn(_ browser: Browser, key: String) async throws {
        #expect(try await browser.waitFor("return !document.getElementById('login').hidden"))
        try await browser.type("#key", key)
        try await browser.click("#login-form button[type='submit']")
        #expect(
            try await browser.waitFor(
                "return document.getElementById('login').hidden && document.querySelector('#card-nodes .value')?.textContent === '1 / 1'"
            ))
    }

    private func text(_ browser: Browser, _ selector: String) async throws -> String {
        try await browser.run("return document.querySelector(arguments[0])?.textContent ?? ''", [selector]) as? String
            ?? ""
    }

    static func complete(_ address: String, key: String) async throws -> (Int, Data) {
        var request = URLRequest(url: URL(string: address + "/v1/completions")!)
        request.httpMethod = "POST"
        request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        request.httpBody = Data(
            #"{"model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 4}"#.utf8)
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    static func post(_ url: String, key: String) async throws -> Int {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = "POST"
        request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        let (_, response) = try await URLSession.shared.data(for: request)
        return (response as? HTTPURLResponse)?.statusCode ?? 0
    }
}
