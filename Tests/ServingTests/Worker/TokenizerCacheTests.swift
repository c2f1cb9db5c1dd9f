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
        let cache = TokenizerCache()
        let first = try cache.tokenizer(of: reader)
        #expect(try cache.tokenizer(of: reader) === first)
        #expect(try TokenizerCache().tokenizer(of: reader) !== first)
        #expect(first.vocabularySize == 49152)
    }
}
