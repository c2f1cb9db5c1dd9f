/// Splits text into the words BPE merges within, as llama.cpp's pre-tokenizers do.
///
/// `gpt2`-style splitting implements GPT-2's pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` by hand;
/// `smollm` (and `starcoder`, `refact`) first splits every digit off on its own (`\p{N}`).
public struct PreTokenizer: Sendable {
    public enum Kind: String, Sendable {
        case gpt2
        case smollm
        /// Llama 3's pattern: case-insensitive contractions, an optional non-letter before letters,
        /// numbers in groups of up to three, symbols with trailing newlines, newline runs.
        case llama3
        /// Qwen2's: Llama 3's with every digit on its own.
        case qwen2
    }

    public let kind: Kind

    public init(kind: Kind) { self.kind = kind }

    /// The pre-tokenizer llama.cpp picks for a GGUF `tokenizer.ggml.pre` value.
    public init?(ggufName: String) {
        switch ggufName {
        case "gpt2", "default": self.init(kind: .gpt2)
        case "smollm", "starcoder", "refact", "codeshell", "command-r": self.init(kind: .smollm)
        case "llama3", "llama-bpe", "llama-v3", "smaug-bpe", "falcon3", "pixtral", "exaone", "minerva-7b":
            self.init(kind: .llama3)
        case "qwen2", "qwen35", "deepseek-r1-qwen", "megrez", "hunyuan": self.init(kind: .qwen2)
        default: return nil
        }
    }

    /// The words of `text`, in order; concatenated they give back `text`.
    public func split(_ text: Substring) -> [Substring] {
        switch kind {
        case .gpt2: return Self.gpt2Split(text)
        case .llama3: return Self.llama3Split(text, digitsPerGroup: 3)
        case .qwen2: return Self.llama3Split(text, digitsPerGroup: 1)
        case .smollm: break
        }
        var words: [Substring] = []
        var start = text.startIndex
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.unicodeScalars.index(after: index)
            if Self.isNumber(text.unicodeScalars[index]) {
                if start < index { words += Self.gpt2Split(text[start..<index]) }
                words.append(text[index..<next])
                start = next
            }
            index = next
        }
        if start < text.endIndex { words += Self.gpt2Split(text[start...]) }
        return words
    }

    static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: true
        default: false
        }
    }

    static func isNumber(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: true
        default: false
        }
    }

    static func isSpace(_ scalar: Unicode.Scalar) -> Bool { scalar.properties.isWhitespace }

    /// The scalar class runs of `\p{L}+`, `\p{N}+` and `[^\s\p{L}\p{N}]+` are made of.
    private static func runClass(_ scalar: Unicode.Scalar) -> Int {
        isLetter(scalar) ? 0 : isNumber(scalar) ? 1 : isSpace(scalar) ? 3 : 2
    }

    /// The scalars of `text` and where each starts (plus the end index).
    static func scalarIndices(_ text: Substring) -> ([Unicode.Scalar], [Substring.Index]) {
        let scalars = Array(text.unicodeScalars)
        var indices: [Substring.Index] = []
        indices.reserveCapacity(scalars.count + 1)
        var position = text.startIndex
        for _ in scalars {
            indices.append(position)
            position = text.unicodeScalars.index(after: position)
        }
        indices.append(text.endIndex)
        return (scalars, indices)
    }

    static func gpt2Split(_ text: Substring) -> [Substring] {
        let (scalars, indices) = scalarIndices(text)
        var words: [Substring] = []
        var i = 0
        let n = scalars.count
        while i < n {
            let c = scalars[i]
            // Contractions: 's 't 're 've 'm 'll 'd
            if c == "'" && i + 1 < n {
                let a = scalars[i + 1]
                let b: Unicode.Scalar? = i + 2 < n ? scalars[i + 2] : nil
                var length = 0
                if a == "s" || a == "t" || a == "m" || a == "d" { length = 2 }
                if (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") { length = 3 }
                if length > 0 {
                    words.append(text[indices[i]..<indices[i + length]])
                    i += length
                    continue
                }
            }
            // An optional single space, then a run of letters, numbers, or other symbols.
            var start = i
            if c == " " && i + 1 < n && !isSpace(scalars[i + 1]) { start = i + 1 }
            if !isSpace(scalars[start]) {
                let kind = runClass(scalars[start])
                var end = start + 1
                while end < n && runClass(scalars[end]) == kind { end += 1 }
                words.append(text[indices[i]..<indices[end]])
                i = end
                continue
            }
            // Whitespace: a run not followed by non-space, else all but its last scalar.
            var end = i
            while end < n && isSpace(scalars[end]) { end += 1 }
            if end < n && end - i > 1 { end -= 1 }
            words.append(text[indices[i]..<indices[end]])
            i = end
        }
        return words
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    /// by hand, alternatives tried in order as the regex engine does.
    static func llama3Split(_ text: Substring, digitsPerGroup: Int) -> [Substring] {
        let (scalars, indices) = scalarIndices(text)
        let n = scalars.count
        func newline(_ c: Unicode.Scalar) -> Bool { c == "\r" || c == "\n" }
        func lower(_ c: Unicode.Scalar) -> Unicode.Scalar { c.properties.lowercaseMapping.unicodeScalars.first ?? c }
        var words: [Substring] = []
        var i = 0
        while i < n {
            let c = scalars[i]
            var end = i
            if c == "'" && i + 1 < n {
                let a = lower(scalars[i + 1])
                let b: Unicode.Scalar? = i + 2 < n ? lower(scalars[i + 2]) : nil
                if (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") {
                    end = i + 3
                } else if a == "s" || a == "t" || a == "m" || a == "d" {
                    end = i + 2
                }
            }
            if end == i {
                if isLetter(c) || (!newline(c) && !isNumber(c) && i + 1 < n && isLetter(scalars[i + 1])) {
                    end = i + 1
                    while end < n && isLetter(scalars[end]) { end += 1 }
                } else if isNumber(c) {
                    end = i + 1
                    while end < n && end - i < digitsPerGroup && isNumber(scalars[end]) { end += 1 }
                } else {
                    let symbolStart = c == " " && i + 1 < n ? i + 1 : i
                    let s = scalars[symbolStart]
                    if !isSpace(s) && !isLetter(s) && !isNumber(s) {
                        end = symbolStart + 1
                        while end < n && !isSpace(scalars[end]) && !isLetter(scalars[end]) && !isNumber(scalars[end]) {
                            end += 1
                        }
                        while end < n && newline(scalars[end]) { end += 1 }
                    } else {
                        // Whitespace (c is a space here).
                        var runEnd = i
                        while runEnd < n && isSpace(scalars[runEnd]) { runEnd += 1 }
                        var lastNewline = -1
                        for j in i..<runEnd where newline(scalars[j]) { lastNewline = j }
                        if lastNewline >= 0 {
                            end = lastNewline + 1
                        } else if runEnd == n || runEnd - i == 1 {
                            end = runEnd
                        } else {
                            end = runEnd - 1
                        }
                    }
                }
            }
            words.append(text[indices[i]..<indices[end]])
            i = end
        }
        return words
    }
}
