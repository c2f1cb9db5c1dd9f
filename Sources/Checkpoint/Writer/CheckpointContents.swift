/// Everything a converter hands the writer: the model's description and its tensors.
public struct CheckpointContents: Sendable {
    public var source: String
    public var sourceFormat: String
    public var config: ModelConfig
    public var metadata: [String: JSONValue]
    /// `gguf` or `huggingface`.
    public var tokenizerFormat: String
    public var chatTemplate: String?
    /// Tokenizer files and other small files, in the order they are written.
    public var files: [(name: String, bytes: [UInt8])]
    /// Names among `files` that make up the tokenizer.
    public var tokenizerFiles: [String]
    /// Tensors in the order they are laid out.
    public var tensors: [TensorSource]

    public init(
        source: String, sourceFormat: String, config: ModelConfig, metadata: [String: JSONValue],
        tokenizerFormat: String, chatTemplate: String?, files: [(name: String, bytes: [UInt8])],
        tokenizerFiles: [String], tensors: [TensorSource]
    ) {
        self.source = source
        self.sourceFormat = sourceFormat
        self.config = config
        self.metadata = metadata
        self.tokenizerFormat = tokenizerFormat
        self.chatTemplate = chatTemplate
        self.files = files
        self.tokenizerFiles = tokenizerFiles
        self.tensors = tensors
    }
}
