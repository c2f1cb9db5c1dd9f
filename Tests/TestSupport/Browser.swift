import Foundation

/// Headless Chromium driven through `chromedriver` (the W3C WebDriver protocol over HTTP), both
/// from the distribution's packages (`.ci/run` installs `chromium` and `chromium-driver`).
public final class Browser: @unchecked Sendable {
    // Sendable: every property is set in `init` and never changed.
    private let driver: Process
    private let base: String
    private let session: String
    private let profile: TemporaryDirectory

    /// The browser and driver executables, or why they are missing.
    public static func executables() -> (browser: String, driver: String)? {
        let browsers = ["/usr/bin/chromium", "/usr/lib/chromium/chromium", "/usr/bin/chromium-browser"]
        let drivers = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        guard let browser = browsers.first(where: { FileManager.default.isExecutableFile(atPath: $0) }),
            let driver = drivers.first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else { return nil }
        return (browser, driver)
    }

    /// Starts chromedriver on a free port and opens a headless browser window of `width` × `height`.
    public init(width: Int = 1280, height: Int = 900) async throws {
        guard let (browser, driverPath) = Self.executables() else {
            throw TestSupportError(
                "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
        }
        profile = try TemporaryDirectory("chromium")
        let port = freeTCPPort()
        driver = Process()
        driver.executableURL = URL(fileURLWithPath: driverPath)
        driver.arguments = ["--port=\(port)"]
        driver.standardOutput = FileHandle.nullDevice
        driver.standardError = FileHandle.nullDevice
        try driver.run()
        base = "http://127.0.0.1:\(port)"
        var ready = false
        for _ in 0..<100 where !ready {
            if let status = try? await Self.call(base, "GET", "/status") as? [String: Any],
                status["ready"] as? Bool == true
            {
                ready = true
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        guard ready else {
            driver.terminate()
            throw TestSupportError("chromedriver did not answer within 10 s")
        }
        let capabilities: [String: Any] = [
            "capabilities": [
                "alwaysMatch": [
                    "browserName": "chrome",
                    "goog:chromeOptions": [
                        "binary": browser,
                        "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--user-data-dir=\(profile.path)", "--window-size=\(width),\(height)",
                            "--no-first-run", "--disable-extensions",
                        ],
                    ],
                    "goog:loggingPrefs": ["browser": "ALL"],
                ]
            ]
        ]
        let created: Any?
        do {
            created = try await Self.call(base, "POST", "/session", capabilities)
        } catch {
            driver.terminate()
            throw error
        }
        guard let id = (created as? [String: Any])?["sessionId"] as? String else {
            driver.terminate()
            throw TestSupportError("chromedriver made no session: \(String(describing: created))")
        }
        session = id
    }

    /// Closes the browser and stops the driver.
    public func quit() async {
        _ = try? await Self.call(base, "DELETE", "/session/\(session)")
        if driver.isRunning { driver.terminate() }
        profile.remove()
    }

    public func open(_ url: String) async throws {
        _ = try await command("POST", "/url", ["url": url])
    }

    /// Runs `script` (a function body; `arguments[i]` are `arguments`) in the page; its result.
    @discardableResult
    public func run(_ script: String, _ arguments: [Any] = []) async throws -> Any? {
        try await command("POST", "/execute/sync", ["script": script, "args": arguments])
    }

    /// Runs `script` until it returns true (checked every 200 ms); false after `timeout` seconds.
    public func waitFor(_ script: String, timeout: Double = 30) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while ContinuousClock.now < deadline {
            if try await run(script) as? Bool == true { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    /// Clicks the first element matching `selector` as a user would (the driver's click).
    /// The page redraws live views on every snapshot: an element found just before a redraw is
    /// stale by the click, so it is found again (three tries).
    public func click(_ selector: String) async throws {
        for attempt in 1...3 {
            do {
                _ = try await command("POST", "/element/\(try await element(selector))/click", [:])
                return
            } catch let error as TestSupportError where attempt < 3 && "\(error)".contains("stale element") {
                continue
            }
        }
    }

    /// Types `text` into the first element matching `selector`.
    public func type(_ selector: String, _ text: String) async throws {
        _ = try await command("POST", "/element/\(try element(selector))/value", ["text": text])
    }

    /// Presses keys (WebDriver key codes, e.g. "\u{E014}" for the right arrow) in the focused element.
    public func press(_ keys: String) async throws {
        let actions: [[String: Any]] = keys.unicodeScalars.flatMap { key -> [[String: Any]] in
            [["type": "keyDown", "value": String(key)], ["type": "keyUp", "value": String(key)]]
        }
        _ = try await command(
            "POST", "/actions", ["actions": [["type": "key", "id": "keyboard", "actions": actions]]])
    }

    public func resize(width: Int, height: Int) async throws {
        _ = try await command("POST", "/window/rect", ["width": width, "height": height])
    }

    /// A PNG of the viewport, written to `path`.
    public func screenshot(to path: String) async throws {
        guard let encoded = try await command("GET", "/screenshot") as? String,
            let png = Data(base64Encoded: encoded)
        else { throw TestSupportError("the browser returned no screenshot") }
        try png.write(to: URL(fileURLWithPath: path))
    }

    /// The page's console messages since the last call (`level`, `message`).
    public func consoleMessages() async throws -> [(level: String, message: String)] {
        let entries = try await command("POST", "/se/log", ["type": "browser"]) as? [[String: Any]] ?? []
        return entries.map { ($0["level"] as? String ?? "", $0["message"] as? String ?? "") }
    }

    private func element(_ selector: String) async throws -> String {
        let found = try await command("POST", "/element", ["using": "css selector", "value": selector])
        guard let reference = (found as? [String: Any])?.values.first as? String else {
            throw TestSupportError("no element matches \(selector)")
        }
        return reference
    }

    private func command(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> Any? {
        try await Self.call(base, method, "/session/\(session)" + path, body)
    }

    /// One WebDriver call; its `value`, or the driver's error as a thrown error. Sent with the
    /// plain client on a thread of its own (Foundation's URLSession on Linux fails on
    /// chromedriver's answers).
    private static func call(_ base: String, _ method: String, _ path: String, _ body: [String: Any]? = nil)
        async throws -> Any?
    {
        let port = Int(base.split(separator: ":").last!)!
        let payload = try body.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
        let request =
            "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
            + (payload.map { "Content-Type: application/json\r\nContent-Length: \($0.utf8.count)\r\n\r\n\($0)" }
                ?? "Content-Length: 0\r\n\r\n")
        let response = try await onThread { try rawRequestBlocking(port: port, request, timeout: 90) }
        let data = response.bodyBytes.isEmpty ? Data(response.body.utf8) : Data(response.bodyBytes)
        let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        let value = (object as? [String: Any])?["value"]
        if response.status >= 400 {
            let message = (value as? [String: Any])?["message"] as? String ?? response.body
            throw TestSupportError("WebDriver \(method) \(path): \(response.status) \(message.prefix(500))")
        }
        return value is NSNull ? nil : value
    }
}
