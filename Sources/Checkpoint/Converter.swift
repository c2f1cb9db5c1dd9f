/// Converts a GGUF file or a Hugging Face model directory into a checkpoint directory.
public enum Converter {
    /// What kind of source a path holds.
    public enum SourceKind: Sendable {
        case gguf
        case huggingFace
    }

    /// Decides from the path: a directory or a `.safetensors`/`config.json` file is a Hugging
    /// Face model (its directory); anything else is read as GGUF.
    public static func kind(of path: String) -> (SourceKind, String) {
        if FileSystem.isDirectory(path) { return (.huggingFace, path) }
        if path.hasSuffix(".safetensors") || path.hasSuffix("config.json") {
            return (.huggingFace, FileSystem.directoryName(path))
        }
        return (.gguf, path)
    }

    /// Reads the source at `path` into checkpoint contents.
    public static func contents(of path: String, source: String? = nil) throws -> CheckpointContents {
        guard FileSystem.exists(path) else { throw CheckpointError(.notFound, "no such file or directory: \(path)") }
        // A FIFO, socket or device would block the read or never end: only regular files (and
        // the directories of Hugging Face models) are models.
        if !FileSystem.isDirectory(path), let type = FileSystem.nonRegularFileType(path) {
            throw CheckpointError(
                .invalidFormat,
                "\(path) is a \(type), not a regular file; give the path of a GGUF file or a model directory")
        }
        switch kind(of: path) {
        case (.gguf, let file): return try GGUFConverter.contents(ofFileAt: file, source: source)
        case (.huggingFace, let directory):
            return try HuggingFaceConverter.contents(ofDirectoryAt: directory, source: source)
        }
    }

    /// Converts `path` into a checkpoint at `destination`, atomically.
    @discardableResult
    public static func convert(
        _ path: String, to destination: String, source: String? = nil,
        options: CheckpointWriter.Options = .init(), progress: ProgressHandler? = nil
    ) throws -> CheckpointIndex {
        let contents = try contents(of: path, source: source)
        return try CheckpointWriter(options: options).write(contents, to: destination, progress: progress)
    }
}
