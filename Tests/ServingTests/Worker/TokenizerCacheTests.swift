import Checkpoint
import Foundation
import Store
import TestSupport
import Testing
import Tokenizers

@testable import Serving

@Suite struct TokenizerCacheTests {
    /// A deployment and its instances share one tokenizer per model; another cache builds its own.
    @Test func eachModelsTokenizerIsBuiltOnce() async throws {
        let directory = try TemporaryDirectory("tokenizer-cache")
        defer { directory.remove() }
        try await RealModel.link(into: directory.file("home"), as: "smol")
        let reader = try ModelStore(root: directory.file("home")).reader(for: try ModelName("smol"))
        let read = { try Tokenizer(checkpoint: reader.index, map: reader.mappedFile, read: reader.fileContents) }
        let cache = TokenizerCache()
        let first = try cache.tokenizer(index: reader.index, name: "smol", build: read)
        #expect(try cache.tokenizer(index: reader.index, name: "smol", build: read) === first)
        #expect(try TokenizerCache().tokenizer(index: reader.index, name: "smol", build: read) !== first)
        #expect(first.vocabularySize == 49152)
    }
}
