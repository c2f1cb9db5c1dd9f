import Foundation
import Scheduling
import TestSupport
import Testing

@testable import Serving

@Suite struct ConfigurationTests {
    @Test func layersOverrideInOrderFileEnvironmentFlags() throws {
        let directory = try TemporaryDirectory("config")
        defer { directory.remove() }
        try writeFile(
            directory.file("sllm.yaml"),
            Array(
                """
                port: 9000
                host: 0.0.0.0
                keep_alive: 10m
                preload: [a, b]
                target-concurrency: 8
                direct_io: true
                keep_fetched: no
                """.utf8))
        var configuration = ServeConfiguration(dataDirectory: "/data")
        try configuration.apply(ServeConfiguration.fileLayer(path: directory.file("sllm.yaml")), source: "file")
        try configuration.apply(
            ServeConfiguration.environmentLayer([
                "SLLM_PORT": "9100", "SLLM_KEEP_ALIVE": "-1", "HOME": "/x", "SLLM_PEER_FETCH": "off",
                "SLLM_MIGRATION": "on",
            ]),
            source: "env")
        try configuration.apply(["port": "9200"], source: "flags")
        #expect(configuration.port == 9200)
        #expect(configuration.host == "0.0.0.0")
        #expect(configuration.deploymentDefaults.keepAlive == .forever)
        #expect(configuration.deploymentDefaults.targetConcurrency == 8)
        #expect(configuration.preload == ["a", "b"])
        #expect(configuration.directIO)
        #expect(!ServeConfiguration(dataDirectory: "/d").directIO)
        #expect(!configuration.keepFetched && !configuration.peerFetch && configuration.migration)
        #expect(!ServeConfiguration(dataDirectory: "/d").migration)
        #expect(
            ServeConfiguration(dataDirectory: "/d").keepFetched && ServeConfiguration(dataDirectory: "/d").peerFetch)
        #expect(configuration.requiresKeys)
        #expect(!ServeConfiguration(dataDirectory: "/d").requiresKeys)
    }

    /// Loopback is decided on the resolved addresses, not the spelling.
    @Test func loopbackIsWhatTheNameResolvesTo() {
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "::1"] {
            #expect(ServeConfiguration.isLoopback(host), "\(host)")
        }
        for host in ["127.example.com", "127.0.0.1.nip.invalid", "0.0.0.0", "10.0.0.1", "::", "example.invalid", ""] {
            #expect(!ServeConfiguration.isLoopback(host), "\(host)")
        }
        var configuration = ServeConfiguration(dataDirectory: "/d")
        configuration.host = "127.example.com"
        #expect(configuration.requiresKeys)
    }

    @Test func hostPortSetsBothAndTheClientFindsTheServer() throws {
        var configuration = ServeConfiguration(dataDirectory: "/d")
        try configuration.apply(["host": "0.0.0.0:9100"], source: "env")
        #expect(configuration.host == "0.0.0.0" && configuration.port == 9100)
        #expect(configuration.clientURL == "http://127.0.0.1:9100")
        try configuration.apply(["host": "[::1]:9101"], source: "env")
        #expect(
            configuration.host == "::1" && configuration.port == 9101 && configuration.clientURL == "http://[::1]:9101")
        try configuration.apply(["host": "::1"], source: "env")
        #expect(configuration.host == "::1" && configuration.port == 9101)
        let directory = try TemporaryDirectory("config-client")
        defer { directory.remove() }
        try writeFile(directory.file("config.yaml"), Array("port: 18700\nadmin_key: k\n".utf8))
        let resolved = try ServeConfiguration.resolved(dataDirectory: directory.path, environment: [:])
        #expect(resolved.clientURL == "http://127.0.0.1:18700" && resolved.adminKey == "k")
        #expect(
            try ServeConfiguration.resolved(dataDirectory: directory.path, environment: ["SLLM_PORT": "18701"]).port
                == 18701)
    }

    /// Every numeric setting at its extremes is refused by name, never trapped on.
    @Test func numericSettingsAtTheirExtremesAreRefused() {
        let hostile = [
            "1e300", "nan", "inf", "-inf", "9223372036854775808", "99999999999999999999h", "-1", "1e30s", "",
        ]
        for key in [
            "keep_alive", "shutdown_timeout", "idle_timeout", "request_timeout", "memory_budget", "dram_cache",
            "max_body", "port", "threads",
            "min_instances", "max_instances", "target_concurrency", "queue_limit", "max_connections",
        ] {
            for value in hostile {
                var configuration = ServeConfiguration(dataDirectory: "/d")
                // -1 is forever for keep_alive, as in Ollama.
                if key == "keep_alive" && ["-1", "-inf"].contains(value) { continue }
                #expect(throws: ServingError.self, "\(key)=\(value)") {
                    try configuration.apply([key: value], source: "env")
                }
            }
        }
        var configuration = ServeConfiguration(dataDirectory: "/d")
        #expect(throws: Never.self) {
            try configuration.apply(
                ["keep_alive": "87600h", "shutdown_timeout": "30s", "idle_timeout": "2m", "max_connections": "10"],
                source: "env")
        }
        #expect(configuration.idleTimeout == .seconds(120) && configuration.maxConnections == 10)
    }

    @Test func badSettingsAreNamed() throws {
        let directory = try TemporaryDirectory("config")
        defer { directory.remove() }
        try writeFile(directory.file("typo.yaml"), Array("prot: 80\n".utf8))
        #expect { try ServeConfiguration.fileLayer(path: directory.file("typo.yaml")) } throws: { error in
            (error as? ServingError)?.message.contains("unknown setting `prot`") == true
        }
        try writeFile(directory.file("broken.yaml"), Array("port: [1\n".utf8))
        #expect(throws: ServingError.self) { try ServeConfiguration.fileLayer(path: directory.file("broken.yaml")) }
        var configuration = ServeConfiguration(dataDirectory: "/d")
        #expect { try configuration.apply(["port": "99999"], source: "flags") } throws: { error in
            (error as? ServingError)?.message == "flags: port `99999` is not a port (0-65535)"
        }
        #expect(throws: ServingError.self) { try configuration.apply(["memory_budget": "lots"], source: "env") }
        #expect(throws: ServingError.self) { try configuration.apply(["keep_alive": "soon"], source: "env") }
        #expect { try configuration.apply(["direct_io": "maybe"], source: "env") } throws: { error in
            (error as? ServingError)?.message == "env: direct_io `maybe` is not true or false"
        }
    }

    /// Values that have broken config parsers: extremes, YAML's own types and tags, aliases.
    static let hostileYAMLValues = [
        "1e300", "nan", ".inf", "-.inf", "-1", "0", "65536", "9223372036854775808", "", "~", "null", "'null'", "\"\"",
        "5m", "16GiB", "1KiB",
        "yes", "No", "0x1F", "1_000", "[a, b]", "[[a]]", "{a: 1}", "&x [1, 2]", "*x", "*undefined", "!!binary aGk=",
        "!!python/object:os.system x",
        "\"\\u0000\"", "|\n  block\n  text", ">-\n  folded", "'it''s'", "[a, {b: c}]", "? complex\n: key", "<<: *x",
        "\t", "%TAG ! x",
        "---", "...", "@reserved", "`tick`", "\"\\uD800\"", "0.0.0.0:99999", "[::1]:8343", "127.0.0.1:", "auto", "on",
        "64MiB/s",
        String(repeating: "9", count: 400), String(repeating: "a", count: 10_000),
    ]

    /// A nested-alias file ("billion laughs"): 9^9 strings if constructed.
    static var billionLaughs: String {
        var items = ["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        for (previous, name) in zip("abcdefgh", "bcdefghi") {
            items.append("&\(name) [" + Array(repeating: "*\(previous)", count: 9).joined(separator: ", ") + "]")
        }
        return "preload: [" + items.joined(separator: ", ") + ", *i]\n"
    }

    /// Random config files (keys, values, byte damage, nesting, alias bombs) and environments:
    /// each is read into settings within their ranges or refused with an error that names the
    /// file or the layer; nothing traps or hangs. Bounded (`SLLM_FUZZ_ITERATIONS`, default 400).
    @Test func randomConfigFilesAndEnvironmentsAreReadOrRefused() throws {
        let directory = try TemporaryDirectory("config-fuzz")
        defer { directory.remove() }
        let iterations = Fuzz.iterations(default: 400)
        var generator = SeededGenerator(seed: UInt64(ProcessInfo.processInfo.environment["SLLM_FUZZ_SEED"] ?? "") ?? 17)
        let names =
            ServeConfiguration.keys + [
                "target-concurrency", "keep-alive", "prot", "PORT", "", "port ", "? x", "[a]", "-",
            ]
        var outcomes = ["read": 0, "refused": 0]

        func check(_ configuration: ServeConfiguration) {
            #expect((0...65535).contains(configuration.port) && (1...256).contains(configuration.threads))
            #expect(
                configuration.memoryBudgetBytes > 0 && configuration.dramCacheBytes >= 0
                    && configuration.maxBodyBytes >= 1024)
            #expect(
                (1...1_000_000).contains(configuration.maxConnections) && configuration.idleTimeout > .zero
                    && configuration.requestTimeout > .zero)
            #expect(
                configuration.deploymentDefaults.minInstances >= 0 && configuration.deploymentDefaults.maxInstances >= 1
            )
            #expect(
                (1...256).contains(configuration.deploymentDefaults.targetConcurrency)
                    && configuration.deploymentDefaults.queueLimit >= 0)
            #expect(!configuration.host.isEmpty)
        }

        for index in 0..<iterations {
            var text: String
            switch index % 10 {
            case 0: text = Self.billionLaughs
            case 1: text = "port: " + String(repeating: "[", count: Int.random(in: 1...3000, using: &generator)) + "1"
            default:
                text = (0..<Int.random(in: 0...8, using: &generator)).map { _ in
                    "\(names.randomElement(using: &generator)!): \(Self.hostileYAMLValues.randomElement(using: &generator)!)"
                }.joined(separator: "\n")
            }
            if Int.random(in: 0..<4, using: &generator) == 0, !text.isEmpty {
                var bytes = Array(text.utf8)
                for _ in 0..<Int.random(in: 1...6, using: &generator) where !bytes.isEmpty {
                    let at = Int.random(in: 0..<bytes.count, using: &generator)
                    switch Int.random(in: 0..<3, using: &generator) {
                    case 0: bytes[at] = UInt8.random(in: 0...255, using: &generator)
                    case 1: bytes.remove(at: at)
                    default:
                        bytes.insert(
                            contentsOf: Array(":-[{&*!|>'\"#\n\t".utf8).shuffled(using: &generator).prefix(3), at: at)
                    }
                }
                text = String(decoding: bytes, as: UTF8.self)
            }
            let path = directory.file("config-\(index).yaml")
            try writeFile(path, Array(text.utf8))
            var configuration = ServeConfiguration(dataDirectory: "/d")
            do {
                try configuration.apply(ServeConfiguration.fileLayer(path: path), source: "config file \(path)")
                check(configuration)
                outcomes["read", default: 0] += 1
            } catch {
                #expect(error.message.contains(path), "\(error.message)")
                #expect(
                    error.message.count < 2000,
                    "an error of \(error.message.count) characters for \(text.prefix(200).debugDescription)")
                outcomes["refused", default: 0] += 1
            }
            // The same values from the environment.
            var environment: [String: String] = [:]
            for _ in 0..<Int.random(in: 1...6, using: &generator) {
                environment["SLLM_" + ServeConfiguration.keys.randomElement(using: &generator)!.uppercased()] = Self
                    .hostileYAMLValues.randomElement(using: &generator)!
            }
            do {
                check(try ServeConfiguration.resolved(dataDirectory: directory.file("none"), environment: environment))
            } catch {
                #expect(error.message.hasPrefix("environment: "), "\(error.message)")
            }
        }
        #expect(outcomes["read", default: 0] > 0 && outcomes["refused", default: 0] > 0, "\(outcomes)")
        print("config fuzz: \(iterations) files and environments: \(outcomes)")
    }

    /// An alias bomb is refused at once, a null is empty (not the text "<null>"), and a key set
    /// twice (also as its dashed spelling) is named.
    @Test func aliasesNullsAndDuplicatesInTheConfigFile() throws {
        let directory = try TemporaryDirectory("config-yaml")
        defer { directory.remove() }
        try writeFile(directory.file("bomb.yaml"), Array(Self.billionLaughs.utf8))
        #expect { try ServeConfiguration.fileLayer(path: directory.file("bomb.yaml")) } throws: { error in
            (error as? ServingError)?.message.contains("`preload` must be a list of plain values") == true
        }
        try writeFile(directory.file("null.yaml"), Array("admin_key: ~\ncache_dir: null\ndefault_model: 'null'\n".utf8))
        var configuration = ServeConfiguration(dataDirectory: "/d")
        try configuration.apply(ServeConfiguration.fileLayer(path: directory.file("null.yaml")), source: "file")
        #expect(
            configuration.adminKey == nil && configuration.cacheDirectory == nil && configuration.defaultModel == "null"
        )
        try writeFile(directory.file("twice.yaml"), Array("target_concurrency: 4\ntarget-concurrency: 8\n".utf8))
        #expect { try ServeConfiguration.fileLayer(path: directory.file("twice.yaml")) } throws: { error in
            (error as? ServingError)?.message.contains("is set twice") == true
        }
        try writeFile(directory.file("alias.yaml"), Array("preload: &models [a, b]\napi_keys: [k]\n".utf8))
        #expect(try ServeConfiguration.fileLayer(path: directory.file("alias.yaml"))["preload"] == "a,b")
    }
}
