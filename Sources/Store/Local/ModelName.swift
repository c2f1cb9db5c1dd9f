import Foundation

/// A validated model name: what `sllm pull` stores a model under and `sllm list` shows.
///
/// 1 to 128 characters from `a-z A-Z 0-9 . _ - :`, starting with a letter or digit; never `..`,
/// never a `/`. Names are directory names in the store, so this is what keeps a hostile name
/// from escaping it.
public struct ModelName: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public let rawValue: String

    public init(_ rawValue: String) throws(StoreError) {
        let allowed = { (c: Character) in
            c.isASCII && (c.isLetter || c.isNumber || c == "." || c == "_" || c == "-" || c == ":")
        }
        guard !rawValue.isEmpty, rawValue.count <= 128, rawValue.allSatisfy(allowed),
            let first = rawValue.first, first.isLetter || first.isNumber, !rawValue.contains("..")
        else {
            throw StoreError(
                .invalidName,
                "invalid model name `\(rawValue)`: use 1-128 letters, digits, `.`, `_`, `-` or `:`, starting with a letter or digit, without `/` or `..`"
            )
        }
        self.rawValue = rawValue
    }

    /// A name derived from a file or directory name: lower-cased, extension dropped, other
    /// characters replaced by `-`.
    public static func derived(from path: String) throws(StoreError) -> ModelName {
        var base = Substring(path)
        while base.hasSuffix("/") { base = base.dropLast() }
        if let slash = base.lastIndex(of: "/") { base = base[base.index(after: slash)...] }
        if let query = base.firstIndex(where: { $0 == "?" || $0 == "#" }) { base = base[..<query] }
        for suffix in [".gguf", ".safetensors"] where base.lowercased().hasSuffix(suffix) {
            base = base.dropLast(suffix.count)
        }
        let cleaned = String(
            base.lowercased().map {
                $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") ? $0 : "-"
            })
        let trimmed = cleaned.drop { !($0.isLetter || $0.isNumber) }
        return try ModelName(String(trimmed.prefix(128)).replacingDoubleDots())
    }

    public var description: String { rawValue }

    /// Decoded from a plain string, checked as `init(_:)` checks it.
    public init(from decoder: any Decoder) throws {
        try self.init(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public static func < (a: ModelName, b: ModelName) -> Bool { a.rawValue < b.rawValue }
}

extension String {
    fileprivate func replacingDoubleDots() -> String {
        var result = self
        while let range = result.range(of: "..") { result.replaceSubrange(range, with: ".") }
        return result
    }
}
