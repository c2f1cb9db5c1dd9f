import Engine
import Foundation
import Scheduling

/// A value OpenAI accepts as either a string or a list of strings (`stop`).
struct StringOrList: Decodable {
    var values: [String]

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let single = try? container.decode(String.self) {
            values = [single]
        } else {
            values = try container.decode([String].self)
        }
    }
}

/// `stream_options`.
struct StreamOptions: Decodable {
    var includeUsage: Bool?
}

/// The fields `/v1/chat/completions` and `/v1/completions` share (plus llama.cpp's and Ollama's
/// common extensions: `top_k`, `min_p`, `repeat_penalty`, `keep_alive`).
struct SamplingFields: Decodable {
    var model: String
    var maxTokens: Int?
    var maxCompletionTokens: Int?
    var temperature: Double?
    var topP: Double?
    var topK: Int?
    var minP: Double?
    var repeatPenalty: Double?
    var seed: Int64?
    var stop: StringOrList?
    var presencePenalty: Double?
    var frequencyPenalty: Double?
    var n: Int?
    var stream: Bool?
    var streamOptions: StreamOptions?
    var keepAlive: KeepAlive?
    var ignoreEos: Bool?

    /// Checks ranges (OpenAI's) and returns the engine's parameters.
    func validated() throws(ServingError) -> (sampling: SamplingParameters, maxTokens: Int?, stop: [String]) {
        func range(_ value: Double?, _ bounds: ClosedRange<Double>, _ param: String) throws(ServingError) {
            if let value, !bounds.contains(value) {
                throw ServingError(
                    .invalidRequest,
                    "`\(param)` must be within \(bounds.lowerBound)...\(bounds.upperBound) (got \(value))", param: param
                )
            }
        }
        guard !model.isEmpty else { throw ServingError(.invalidRequest, "`model` must not be empty", param: "model") }
        if let n, n != 1 { throw ServingError(.invalidRequest, "only n = 1 is supported (got \(n))", param: "n") }
        try range(temperature, 0...2, "temperature")
        try range(topP, 0...1, "top_p")
        try range(minP, 0...1, "min_p")
        try range(presencePenalty, -2...2, "presence_penalty")
        try range(frequencyPenalty, -2...2, "frequency_penalty")
        if let repeatPenalty, repeatPenalty <= 0 {
            throw ServingError(.invalidRequest, "`repeat_penalty` must be positive", param: "repeat_penalty")
        }
        if let topK, topK < 0 { throw ServingError(.invalidRequest, "`top_k` must be 0 or more", param: "top_k") }
        let maxTokens = maxCompletionTokens ?? self.maxTokens
        if let maxTokens, maxTokens < 1 {
            throw ServingError(
                .invalidRequest,
                "`\(maxCompletionTokens != nil ? "max_completion_tokens" : "max_tokens")` must be at least 1 (got \(maxTokens))",
                param: maxCompletionTokens != nil ? "max_completion_tokens" : "max_tokens")
        }
        let stop = stop?.values ?? []
        if stop.count > 4 {
            throw ServingError(
                .invalidRequest, "at most 4 stop sequences are allowed (got \(stop.count))", param: "stop")
        }
        var sampling = SamplingParameters()
        sampling.temperature = Float(temperature ?? 1)
        sampling.topP = Float(topP ?? 1)
        sampling.topK = topK ?? 0
        sampling.minP = Float(minP ?? 0)
        sampling.repetitionPenalty = Float(repeatPenalty ?? 1)
        sampling.presencePenalty = Float(presencePenalty ?? 0)
        sampling.frequencyPenalty = Float(frequencyPenalty ?? 0)
        sampling.seed = seed.map { UInt64(bitPattern: $0) } ?? UInt64.random(in: 0...UInt64.max)
        return (sampling, maxTokens, stop)
    }
}

/// `POST /v1/chat/completions`.
struct ChatCompletionRequest: Decodable {
    struct Message: Decodable {
        var role: String
        var content: String

        enum CodingKeys: String, CodingKey { case role, content }

        struct Part: Decodable {
            var type: String
            var text: String?
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            role = try container.decode(String.self, forKey: .role)
            if try container.decodeNil(forKey: .content) {
                content = ""
            } else if let text = try? container.decode(String.self, forKey: .content) {
                content = text
            } else {
                // Content parts: text parts are joined; other kinds (images, audio) are refused.
                let parts = try container.decode([Part].self, forKey: .content)
                var text = ""
                for (index, part) in parts.enumerated() {
                    guard part.type == "text", let piece = part.text else {
                        throw DecodingError.dataCorruptedError(
                            forKey: .content, in: container,
                            debugDescription:
                                "content part \(index) has type `\(part.type)`; this model takes only text parts")
                    }
                    text += piece
                }
                content = text
            }
        }
    }

    var messages: [Message]
    var logprobs: Bool?
    var topLogprobs: Int?

    static let roles: Set<String> = ["system", "developer", "user", "assistant", "tool"]

    func validate() throws(ServingError) {
        guard !messages.isEmpty else {
            throw ServingError(.invalidRequest, "`messages` must not be empty", param: "messages")
        }
        for (index, message) in messages.enumerated() where !Self.roles.contains(message.role) {
            throw ServingError(
                .invalidRequest,
                "messages[\(index)].role `\(message.role)` is not one of system, developer, user, assistant, tool",
                param: "messages[\(index)].role")
        }
        if let topLogprobs, !(0...20).contains(topLogprobs) {
            throw ServingError(
                .invalidRequest, "`top_logprobs` must be within 0...20 (got \(topLogprobs))", param: "top_logprobs")
        }
        if topLogprobs != nil && logprobs != true {
            throw ServingError(.invalidRequest, "`top_logprobs` needs `logprobs` set to true", param: "top_logprobs")
        }
    }
}

/// `POST /v1/completions`.
struct CompletionRequest: Decodable {
    /// A prompt as text or token ids.
    enum Prompt {
        case text(String)
        case tokens([Int])
    }

    var prompt: Prompt
    var logprobs: Int?
    var echo: Bool?
    var suffix: String?

    enum CodingKeys: String, CodingKey { case prompt, logprobs, echo, suffix }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        logprobs = try container.decodeIfPresent(Int.self, forKey: .logprobs)
        echo = try container.decodeIfPresent(Bool.self, forKey: .echo)
        suffix = try container.decodeIfPresent(String.self, forKey: .suffix)
        if let text = try? container.decode(String.self, forKey: .prompt) {
            prompt = .text(text)
        } else if let tokens = try? container.decode([Int].self, forKey: .prompt) {
            prompt = .tokens(tokens)
        } else if let texts = try? container.decode([String].self, forKey: .prompt) {
            guard texts.count == 1 else {
                throw DecodingError.dataCorruptedError(
                    forKey: .prompt, in: container,
                    debugDescription: "one prompt per request is supported (got \(texts.count))")
            }
            prompt = .text(texts[0])
        } else if let lists = try? container.decode([[Int]].self, forKey: .prompt) {
            guard lists.count == 1 else {
                throw DecodingError.dataCorruptedError(
                    forKey: .prompt, in: container,
                    debugDescription: "one prompt per request is supported (got \(lists.count))")
            }
            prompt = .tokens(lists[0])
        } else if container.contains(.prompt) {
            throw DecodingError.typeMismatch(
                String.self,
                .init(
                    codingPath: [CodingKeys.prompt],
                    debugDescription: "expected a string, a list of strings or a list of token ids"))
        } else {
            throw DecodingError.keyNotFound(CodingKeys.prompt, .init(codingPath: [], debugDescription: "missing"))
        }
    }

    func validate() throws(ServingError) {
        if let logprobs, !(0...20).contains(logprobs) {
            throw ServingError(.invalidRequest, "`logprobs` must be within 0...20 (got \(logprobs))", param: "logprobs")
        }
        if echo == true { throw ServingError(.invalidRequest, "`echo` is not supported", param: "echo") }
        if let suffix, !suffix.isEmpty {
            throw ServingError(.invalidRequest, "`suffix` is not supported", param: "suffix")
        }
    }
}

extension ServingError {
    /// A decoding failure as a 400 naming the parameter at fault. Foundation reports a number
    /// that no Swift integer holds (`"max_tokens": 1e300`) as invalid JSON without a path; the
    /// body is then read again to name the field.
    init(decoding error: any Error, body: Data) {
        self.init(decoding: error)
        guard param == nil, let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else { return }
        for key in object.keys.sorted() {
            // true and false are 1 and 0: never out of range.
            guard let number = object[key] as? NSNumber else { continue }
            let value = number.doubleValue
            if value.rounded() == value, abs(value) >= 0x1p63 {
                self.init(.invalidRequest, "`\(key)` is \(number), outside the range of a 64-bit integer", param: key)
                return
            }
        }
    }

    /// Turns a decoding failure into a 400 naming the parameter at fault.
    init(decoding error: any Error) {
        func path(_ codingPath: [any CodingKey]) -> String {
            var text = ""
            for key in codingPath {
                if let index = key.intValue {
                    text += "[\(index)]"
                } else {
                    text += (text.isEmpty ? "" : ".") + snakeCase(key.stringValue)
                }
            }
            return text
        }
        guard let error = error as? DecodingError else {
            self.init(.invalidRequest, "the request body is not valid JSON: \(error)")
            return
        }
        switch error {
        case .typeMismatch(let type, let context):
            let param = path(context.codingPath)
            self.init(
                .invalidRequest,
                "invalid type for `\(param)`: expected \(Self.typeName(type))\(context.debugDescription.hasPrefix("Expected") ? "" : " (\(context.debugDescription))")",
                param: param)
        case .valueNotFound(let type, let context):
            let param = path(context.codingPath)
            self.init(.invalidRequest, "`\(param)` must not be null (expected \(Self.typeName(type)))", param: param)
        case .keyNotFound(let key, let context):
            let param = path(context.codingPath + [key])
            self.init(.invalidRequest, "missing required parameter `\(param)`", param: param)
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty {
                self.init(.invalidRequest, "the request body is not valid JSON (\(context.debugDescription))")
            } else {
                let param = path(context.codingPath)
                self.init(.invalidRequest, "invalid `\(param)`: \(context.debugDescription)", param: param)
            }
        @unknown default:
            self.init(.invalidRequest, "the request body could not be decoded: \(error)")
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "a boolean"
        default:
            let name = "\(type)"
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("Dictionary") || name.contains("Request") || name.contains("Options") {
                return "an object"
            }
            return name
        }
    }
}

private func snakeCase(_ key: String) -> String {
    var result = ""
    for character in key {
        if character.isUppercase {
            result += "_" + character.lowercased()
        } else {
            result.append(character)
        }
    }
    return result
}

/// Checks that a request body is UTF-8 JSON text, as RFC 8259 requires of JSON exchanged between
/// systems. Foundation's decoder would also take UTF-16 and UTF-32 (it guesses from zero bytes
/// and byte-order marks); the API takes UTF-8 only, and says so.
func requireUTF8(_ bytes: some Collection<UInt8>) throws(ServingError) {
    let valid =
        bytes.first != 0xFE && bytes.first != 0xFF && !bytes.contains(0)
        && String(validating: bytes, as: UTF8.self) != nil
    guard valid else {
        throw ServingError(.invalidRequest, "the request body is not UTF-8 text (JSON requests must be UTF-8)")
    }
}

extension JSONDecoder {
    /// Decodes an OpenAI request: snake_case keys, unknown fields ignored.
    static var openAI: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}
