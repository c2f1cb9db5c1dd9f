import Foundation
import TestSupport
import Testing

@testable import Store

@Suite struct ModelNameTests {
    @Test(arguments: ["smollm2-135m", "llama3:8b", "Qwen2.5-0.5B", "a", "x_y.z"])
    func validNamesAreAccepted(name: String) throws {
        #expect(try ModelName(name).rawValue == name)
    }

    @Test(arguments: [
        "", "../etc", "a/b", "..", "a..b", ".hidden", "-dash", "sp ace", "ünï", String(repeating: "a", count: 129),
        "a\0b",
    ])
    func hostileNamesAreRejected(name: String) {
        #expect(throws: StoreError.self) { try ModelName(name) }
    }

    @Test func namesAreDerivedFromPathsAndURLs() throws {
        #expect(
            try ModelName.derived(from: "/models/SmolLM2-135M-Instruct.Q4_1.gguf").rawValue
                == "smollm2-135m-instruct.q4_1")
        #expect(try ModelName.derived(from: "./My Model/").rawValue == "my-model")
        #expect(try ModelName.derived(from: "model.gguf?download=1").rawValue == "model")
    }
}

@Suite struct ModelStoreTests {
    @Test func interruptedRemovalsAreCleanedUp() throws {
        let directory = try TestSupport.TemporaryDirectory("store")
        defer { directory.remove() }
        let store = ModelStore(root: directory.path)
        try FileManager.default.createDirectory(
            atPath: store.modelsDirectory + "/.removing-x-123/sub", withIntermediateDirectories: true)
        #expect(try store.list().isEmpty)
        #expect(TestSupport.directoryEntries(store.modelsDirectory).isEmpty)
    }
}
