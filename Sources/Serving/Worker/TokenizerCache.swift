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

    /// The tokenizer of the checkpoint `index` (named `name` in errors), built once by `build`.
    /// - Throws: `EngineError.unsupportedModel` naming the checkpoint when its files do not make one.
    func tokenizer(index: CheckpointIndex, name: String, build: () throws -> Tokenizer) throws -> Tokenizer {
        let key = Tokenizer.key(of: index)
        if let cached = tokenizers.withLock({ $0[key] }) { return cached }
        let tokenizer = try Engine.tokenizer(name: name, build: build)
        tokenizers.withLock { $0[key] = tokenizer }
        return tokenizer
    }

    /// The tokenizer of a loaded model (its `vocabulary.bin` mapped in place).
    func tokenizer(of model: any ModelWeights) throws -> Tokenizer {
        try tokenizer(index: model.index, name: model.name) { try Engine.tokenizer(of: model) }
    }
}
