import Checkpoint
import Engine
import Foundation
import Synchronization
import Tokenizers

/// Tokenizers built in this process, by what identifies them (`Tokenizer.key(of:)`): a
/// tokenizer is immutable, so a deployment and its instances (a scale-up, a restart after
/// scale-to-zero) share one instead of parsing a megabyte of vocabulary again.
final class TokenizerCache: Sendable {
    private let tokenizers = Mutex<[String: Tokenizer]>([:])

    /// The tokenizer of the checkpoint `index` (named `name` in errors), built once.
    /// - Throws: `EngineError.unsupportedModel` naming the checkpoint when its files do not make one.
    func tokenizer(index: CheckpointIndex, name: String, read: (String) throws -> Data) throws -> Tokenizer {
        let key = Tokenizer.key(of: index)
        if let cached = tokenizers.withLock({ $0[key] }) { return cached }
        let tokenizer = try Engine.tokenizer(index: index, name: name, read: read)
        tokenizers.withLock { $0[key] = tokenizer }
        return tokenizer
    }

    /// The tokenizer of a loaded model.
    func tokenizer(of model: any ModelWeights) throws -> Tokenizer {
        try tokenizer(index: model.index, name: model.name) { Data(try model.fileContents($0)) }
    }
}
