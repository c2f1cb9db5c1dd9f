import Foundation
@testable import Serving
import Testing
import TestSupport

@Suite struct ConfigurationTests {
    @Test func layersOverrideInOrderFileEnvironmentFlags() throws {
        let directory = try TemporaryDirectory("config")
        defer { directory.remove() }
        try writeFile(directory.file("sllm.yaml"), Array("""
            port: 9000
            host: 0.0.0.0
            keep_alive: 10m
            preload: [a, b]
            target-concurrency: 8
            direct_io: true
            """.utf8))
        var configuration = ServeConfiguration(dataDirectory: "/data")
        try configuration.apply(ServeConfiguration.fileLayer(path: directory.file("sllm.yaml")), source: "file")
        try configuration.apply(ServeConfiguration.environmentLayer(["SLLM_PORT": "9100", "SLLM_KEEP_ALIVE": "-1", "HOME": "/x"]), source: "env")
        try configuration.apply(["port": "9200"], source: "flags")
        #expect(configuration.port == 9200)
        #expect(configuration.host == "0.0.0.0")
        #expect(configuration.deploymentDefaults.keepAlive == .forever)
        #expect(configuration.deploymentDefaults.targetConcurrency == 8)
        #expect(configuration.preload == ["a", "b"])
        #expect(configuration.directIO)
        #expect(!ServeConfiguration(dataDirectory: "/d").directIO)
        #expect(configuration.requiresKeys)
        #expect(!ServeConfiguration(dataDirectory: "/d").requiresKeys)
    }

    /// Loopback is decided on the resolved addresses, not the spelling.
    @Test func loopbackIsWhatTheNameResolvesTo() {
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "::1"] { #expect(ServeConfiguration.isLoopback(host), "\(host)") }
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
        #expect(configuration.host == "::1" && configuration.port == 9101 && configuration.clientURL == "http://[::1]:9101")
        try configuration.apply(["host": "::1"], source: "env")
        #expect(configuration.host == "::1" && configuration.port == 9101)
        let directory = try TemporaryDirectory("config-client")
        defer { directory.remove() }
        try writeFile(directory.file("config.yaml"), Array("port: 18700\nadmin_key: k\n".utf8))
        let resolved = try ServeConfiguration.resolved(dataDirectory: directory.path, environment: [:])
        #expect(resolved.clientURL == "http://127.0.0.1:18700" && resolved.adminKey == "k")
        #expect(try ServeConfiguration.resolved(dataDirectory: directory.path, environment: ["SLLM_PORT": "18701"]).port == 18701)
    }

    /// Every numeric setting at its extremes is refused by name, never trapped on.
    @Test func numericSettingsAtTheirExtremesAreRefused() {
        let hostile = ["1e300", "nan", "inf", "-inf", "9223372036854775808", "99999999999999999999h", "-1", "1e30s", ""]
        for key in ["keep_alive", "shutdown_timeout", "idle_timeout", "request_timeout", "memory_budget", "dram_cache", "max_body", "port", "threads",
                    "min_instances", "max_instances", "target_concurrency", "queue_limit", "max_connections"] {
            for value in hostile {
                var configuration = ServeConfiguration(dataDirectory: "/d")
                // -1 is forever for keep_alive, as in Ollama.
                if key == "keep_alive" && ["-1", "-inf"].contains(value) { continue }
                #expect(throws: ServingError.self, "\(key)=\(value)") { try configuration.apply([key: value], source: "env") }
            }
        }
        var configuration = ServeConfiguration(dataDirectory: "/d")
        #expect(throws: Never.self) { try configuration.apply(["keep_alive": "87600h", "shutdown_timeout": "30s", "idle_timeout": "2m", "max_connections": "10"], source: "env") }
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
}
