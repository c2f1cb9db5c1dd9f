public import Foundation

/// One message of a conversation, in the OpenAI/Hugging Face shape templates expect.
public struct ChatMessage: Sendable, Equatable, Codable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    var value: JinjaValue { .object(JinjaObject([("role", .string(role)), ("content", .string(content))])) }
}

extension Tokenizer {
    /// Renders `messages` with the model's own chat template (Python jinja2 semantics).
    ///
    /// - Parameters:
    ///   - addGenerationPrompt: end with the header of the assistant's turn.
    ///   - tools: OpenAI-style tool definitions, passed to templates that support them.
    /// - Throws: `TemplateError` when the model has no template, the template is malformed, or it
    ///   rejects the conversation (`raise_exception`, e.g. roles that do not alternate).
    public func renderChat(_ messages: [ChatMessage], addGenerationPrompt: Bool = true, tools: JinjaValue? = nil)
        throws(TemplateError) -> String
    {
        try renderChat(values: messages.map(\.value), addGenerationPrompt: addGenerationPrompt, tools: tools)
    }

    /// `renderChat` with messages given as template values (for messages with extra fields).
    public func renderChat(values messages: [JinjaValue], addGenerationPrompt: Bool = true, tools: JinjaValue? = nil)
        throws(TemplateError) -> String
    {
        guard let chatTemplate else { throw TemplateError("the model has no chat template") }
        let template = try JinjaTemplate(chatTemplate)
        var context: [String: JinjaValue] = [
            "messages": .array(messages),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .string(bosTokenID.map { token($0) } ?? ""),
            "eos_token": .string(eosTokenID.map { token($0) } ?? ""),
        ]
        if let tools { context["tools"] = tools }
        return try template.render(context)
    }

    /// Token ids of a rendered chat prompt: special tokens parsed, BOS added only when the
    /// vocabulary wants one and the template did not already write it.
    public func encodeChat(_ rendered: String) -> [Int] {
        encode(rendered, addSpecial: !writesBOS(rendered), parseSpecial: true)
    }

    /// `encodeChat`, giving up with `CancellationError` once the current task is cancelled.
    public func encodeChatCancellable(_ rendered: String) throws(CancellationError) -> [Int] {
        try encodeCancellable(rendered, addSpecial: !writesBOS(rendered), parseSpecial: true)
    }

    private func writesBOS(_ rendered: String) -> Bool {
        bosTokenID.map { rendered.hasPrefix(token($0)) } ?? false
    }
}

extension JinjaValue {
    /// Parses JSON keeping object keys in document order (as Python's json does), so templates
    /// that print tool definitions with `tojson` reproduce them as given.
    public static func parseJSON(_ data: Data) throws(TemplateError) -> JinjaValue {
        var parser = OrderedJSONParser(bytes: Array(data))
        let value = try parser.value()
        parser.skipSpace()
        guard parser.index == parser.bytes.count else {
            throw TemplateError("JSON: trailing characters at offset \(parser.index)")
        }
        return value
    }
}

struct OrderedJSONParser {
    let bytes: [UInt8]
    var index = 0
    var depth = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func skipSpace() {
        while index < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[index]) { index += 1 }
    }

    mutating func value() throws(TemplateError) -> JinjaValue {
        skipSpace()
        guard index < bytes.count else { throw TemplateError("JSON: unexpected end") }
        depth += 1
        defer { depth -= 1 }
        guard depth < 512 else { throw TemplateError("JSON: nested too deeply") }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            index += 1
            var object = JinjaObject()
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object(object) }
            while true {
                skipSpace()
                guard case .string(let key) = try value() else {
                    throw TemplateError("JSON: object keys must be strings (offset \(index))")
                }
                skipSpace()
                try expect(UInt8(ascii: ":"))
                object[key] = try value()
                skipSpace()
                if accept(UInt8(ascii: ",")) { continue }
                try expect(UInt8(ascii: "}"))
                return .object(object)
            }
        case UInt8(ascii: "["):
            index += 1
            var items: [JinjaValue] = []
            skipSpace()
            if accept(UInt8(ascii: "]")) { return .array(items) }
            while true {
                items.append(try value())
                skipSpace()
                if accept(UInt8(ascii: ",")) { continue }
                try expect(UInt8(ascii: "]"))
                return .array(items)
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .none
        default:
            let start = index
            while index < bytes.count, "+-0123456789.eE".utf8.contains(bytes[index]) { index += 1 }
            let text = String(decoding: bytes[start..<index], as: UTF8.self)
            if let int = Int(text) { return .int(int) }
            if let double = Double(text), !text.isEmpty { return .double(double) }
            throw TemplateError("JSON: unexpected character at offset \(start)")
        }
    }

    mutating func accept(_ byte: UInt8) -> Bool {
        if index < bytes.count, bytes[index] == byte { index += 1; return true }
        return false
    }

    mutating func expect(_ byte: UInt8) throws(TemplateError) {
        guard accept(byte) else {
            throw TemplateError("JSON: expected `\(Character(Unicode.Scalar(byte)))` at offset \(index)")
        }
    }

    mutating func literal(_ word: String) throws(TemplateError) {
        for byte in word.utf8 { try expect(byte) }
    }

    mutating func string() throws(TemplateError) -> String {
        index += 1
        var out: [UInt8] = []
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""): return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard index < bytes.count else { break }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code), accept(UInt8(ascii: "\\")), accept(UInt8(ascii: "u")) {
                        let low = try hex4()
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    out += Array(String(Unicode.Scalar(code).map(Character.init) ?? "\u{FFFD}").utf8)
                default: out.append(escape)
                }
            default:
                if byte < 0x20 { throw TemplateError("JSON: control character in a string at offset \(index - 1)") }
                out.append(byte)
            }
        }
        throw TemplateError("JSON: unterminated string")
    }

    mutating func hex4() throws(TemplateError) -> UInt32 {
        guard index + 4 <= bytes.count,
            let value = UInt32(String(decoding: bytes[index..<(index + 4)], as: UTF8.self), radix: 16)
        else {
            throw TemplateError("JSON: bad \\u escape at offset \(index)")
        }
        index += 4
        return value
    }
}
