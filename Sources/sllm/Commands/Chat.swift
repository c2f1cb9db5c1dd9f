import ArgumentParser
import Engine
import Foundation
import Tokenizers

struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with a model in the terminal, using its own chat template.",
        discussion: """
            Type a message and press Enter. Commands: /reset clears the conversation, /exit (or
            end of input) quits. The conversation's KV cache is kept between turns, so each turn
            only computes what is new.

            Example:
              sllm chat smollm2-135m --system "Answer in one sentence." --temperature 0.7
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var engineOptions: EngineOptions

    @Argument(help: "Model name in the store.")
    var model: String

    @Option(help: "A system message to start the conversation with.")
    var system: String?

    @Flag(help: "Print engine timings after each answer.")
    var timings = false

    func run() async throws {
        _ = global.bootstrap()
        let engine = try await startEngine(model, global: global, options: engineOptions)
        guard engine.tokenizer.chatTemplate != nil else { throw CommandFailure("\(model) has no chat template; use `sllm generate`") }
        let interactive = isatty(0) != 0
        var messages: [ChatMessage] = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
        var sequence: EngineSequence?
        if interactive { say("Chatting with \(model). /reset clears the conversation, /exit quits.") }
        while true {
            if interactive { FileHandle.standardOutput.write(Data("> ".utf8)) }
            guard let line = readLine() else { break }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input.isEmpty { continue }
            if input == "/exit" || input == "/quit" { break }
            if input == "/reset" {
                messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
                sequence = nil
                say("(conversation cleared)")
                continue
            }
            messages.append(ChatMessage(role: "user", content: line))
            let ids: [Int]
            do {
                ids = engine.tokenizer.encodeChat(try engine.tokenizer.renderChat(messages))
            } catch {
                messages.removeLast()
                say("error: the chat template failed: \(error)")
                continue
            }
            do {
                let current = try reuse(sequence, for: ids, engine: engine)
                sequence = current
                var parameters = sampling.parameters
                let before = current.timings
                if parameters.maxTokens == nil { parameters.maxTokens = max(1, engine.contextLength - ids.count) }
                let result = try engine.generate(on: current, parameters: parameters) { token in
                    FileHandle.standardOutput.write(Data(token.text.utf8))
                    return true
                }
                say()
                messages.append(ChatMessage(role: "assistant", content: result.text))
                if timings {
                    let t = result.timings
                    let prefill = t.prefillTokens - before.prefillTokens, decode = t.decodeTokens - before.decodeTokens
                    say(String(format: "[prompt %d tokens (%d new) in %.1f ms; %d tokens at %.2f ms/token]", ids.count, prefill,
                                 (t.prefill - before.prefill) * 1000, decode, decode == 0 ? 0 : (t.decode - before.decode) * 1000 / Double(decode)))
                }
            } catch let error as EngineError {
                messages.removeLast()
                sequence = nil
                say("error: \(error.description) (/reset starts over)")
            }
        }
    }

    /// The conversation's sequence cut back to what it shares with `ids`, then extended; a new
    /// one when nothing is shared.
    private func reuse(_ sequence: EngineSequence?, for ids: [Int], engine: Engine) throws -> EngineSequence {
        guard let sequence else { return try engine.makeSequence(tokens: ids, sampling: sampling.parameters.sampling) }
        var common = 0
        let previous = sequence.tokens
        while common < min(previous.count, ids.count) - 1 && previous[common] == ids[common] { common += 1 }
        guard common > 0 else { return try engine.makeSequence(tokens: ids, sampling: sampling.parameters.sampling) }
        engine.truncate(sequence, to: common)
        try engine.append(Array(ids[common...]), to: sequence)
        return sequence
    }
}

/// Writes a line straight to standard output (unbuffered, so it interleaves with streamed text).
func say(_ line: String = "") {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
