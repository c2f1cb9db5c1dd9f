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
