import ArgumentParser
import Engine
import Foundation
import Tokenizers

struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with a model in the terminal, using its own chat template.",
        discussion: """
            Type a message and press Enter. Commands: /reset clears the conversation, /exit (or
            end of input, Ctrl-D) quits. Ctrl-C stops the answer being written and returns to the
            prompt; at the prompt it quits. The conversation's KV cache is kept between turns, so
            each turn only computes what is new. Answers stop after 256 tokens unless -n says
            otherwise.

            Example:
              sllm chat smollm2-135m --system "Answer in one sentence." --temperature 0.7
            """,
        aliases: ["run"])

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
        guard engine.tokenizer.chatTemplate != nil else {
            throw CommandFailure("\(model) has no chat template; use `sllm generate`")
        }
        let interactive = isatty(0) != 0
        var messages: [ChatMessage] = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
        var sequence: EngineSequence?
        if interactive {
            say(
                "Chatting with \(model). /reset clears the conversation, /exit or Ctrl-D quits, Ctrl-C stops an answer."
            )
        }
        let interrupts = ChatInterrupts(enabled: interactive)
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
                interrupts.generating(true)
                let result = try engine.generate(on: current, parameters: parameters) { token in
                    FileHandle.standardOutput.write(Data(token.text.utf8))
                    return !interrupts.stopRequested
                }
                let stopped = interrupts.generating(false)
                say(stopped ? " [stopped]" : "")
                messages.append(ChatMessage(role: "assistant", content: result.text))
                if timings {
                    let t = result.timings
                    let prefill = t.prefillTokens - before.prefillTokens, decode = t.decodeTokens - before.decodeTokens
                    say(
                        String(
                            format: "[prompt %d tokens (%d new) in %.1f ms; %d tokens at %.2f ms/token]", ids.count,
                            prefill,
                            (t.prefill - before.prefill) * 1000, decode,
                            decode == 0 ? 0 : (t.decode - before.decode) * 1000 / Double(decode)))
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

/// Ctrl-C in `sllm chat`, as in Ollama: while an answer is written it stops the answer; at the
/// prompt it quits.
final class ChatInterrupts: @unchecked Sendable {
    // Sendable: the flags are read and written under `lock`; the signal source runs on its queue.
    private let lock = NSLock()
    private var busy = false
    private var stop = false
    private var source: (any DispatchSourceSignal)?

    init(enabled: Bool) {
        guard enabled else { return }
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { [weak self] in
            guard let self else { return }
            self.lock.lock()
            let busy = self.busy
            if busy { self.stop = true }
            self.lock.unlock()
            if !busy {
                FileHandle.standardOutput.write(Data("\n".utf8))
                Foundation.exit(0)
            }
        }
        source.resume()
        self.source = source
    }

    var stopRequested: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stop
    }

    /// Marks an answer as being written (or done); returns whether it was stopped.
    @discardableResult
    func generating(_ value: Bool) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let stopped = stop
        busy = value
        stop = false
        return stopped
    }
}

/// Writes a line straight to standard output (unbuffered, so it interleaves with streamed text).
func say(_ line: String = "") {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
