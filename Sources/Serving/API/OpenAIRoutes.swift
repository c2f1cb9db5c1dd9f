import Engine
import Foundation
import Hummingbird
import Logging
import NIOCore
import Scheduling
import Store
import Tokenizers

/// `POST /v1/chat/completions` and `POST /v1/completions`: validate, tokenize, take a slot on an
/// instance (a cold start when there is none), run the job and answer as OpenAI does, streamed
/// as server-sent events or whole.
struct OpenAIRoutes: Sendable {
    let registry: DeploymentRegistry
    let metrics: ServingMetrics
    let lifecycle: ServerLifecycle
    let maxBodyBytes: Int
    let logger: Logger

    enum Kind {
        case chat, text
    }

    /// A validated request, ready to queue.
    struct Prepared {
        var kind: Kind
        var deployment: Deployment
        var job: GenerationJob
        var stream: Bool
        var includeUsage: Bool
        var keepAlive: KeepAlive?
        var arrival: ContinuousClock.Instant
        var created: Int
        /// Whether the client asked for log-probabilities.
        var logprobs: Bool { job.logprobs != nil }
    }

    /// Whole (non-streaming) requests that may generate more than this many tokens are cancelled
    /// when their client disconnects. That needs the connection's inbound side watched, which
    /// ends the connection after the response; shorter requests keep it alive (they finish in
    /// milliseconds, and a reused connection saves about 0.3 ms per request).
    static let watchedGenerationTokens = 64
    /// Bodies larger than this are watched from before tokenizing (about 35 ms of it).
    static let watchedPromptBytes = 16 << 10

    func handle(_ kind: Kind, _ request: Request, context: some RequestContext) async throws -> Response {
        let arrival = ContinuousClock.now
        var model = "-"
        var request = request
        do {
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: maxBodyBytes)
            } catch {
                throw ServingError(.bodyTooLarge, "the request body exceeds the limit of \(maxBodyBytes) bytes")
            }
            try requireUTF8(body.readableBytesView)
            let data = Data(body.readableBytesView)
            // A large prompt takes a noticeable time to tokenize (about 2 µs a byte, 0.15 s at
            // the 8-bytes-a-token cap of an 8k context): its connection is watched from the
            // start, so a client that leaves cancels the tokenizing too.
            if data.count > Self.watchedPromptBytes {
                return try await watched(request) {
                    try await respond(kind, data, request, arrival: arrival, model: &model, watching: false)
                }
            }
            return try await respond(kind, data, request, arrival: arrival, model: &model, watching: true)
        } catch is CancellationError {
            metrics.request(deployment: model, status: 499)
            throw CancellationError()
        } catch {
            let failure = error as? ServingError ?? ServingError(error)
            metrics.request(deployment: model, status: Int(failure.status.code))
            throw failure
        }
    }

    /// Validates, tokenizes, queues and answers; a whole answer that may generate many tokens
    /// is watched for a disconnect when `watching` (false: the caller watches already).
    private func respond(
        _ kind: Kind, _ data: Data, _ request: Request, arrival: ContinuousClock.Instant, model: inout String,
        watching: Bool
    ) async throws -> Response {
        let prepared = try await prepare(kind, data, arrival: arrival, model: &model)
        guard !lifecycle.isShuttingDown else { throw ServingError(.shuttingDown, "the server is shutting down") }
        let ticket = try await prepared.deployment.enqueue()
        // A stream notices a disconnect when a write fails.
        if prepared.stream { return streamingResponse(prepared, ticket: ticket) }
        guard watching, (prepared.job.maxTokens ?? Int.max) > Self.watchedGenerationTokens else {
            return try await wholeResponse(prepared, ticket: ticket)
        }
        return try await watched(request) { try await wholeResponse(prepared, ticket: ticket) }
    }

    /// Runs `work`, cancelled if the client closes its connection first. Watching reads the
    /// connection's inbound side, which ends the connection after the response: the answer,
    /// an error included, says so, so that clients open a new connection instead of failing
    /// on this one.
    private func watched(_ request: Request, _ work: () async throws -> Response) async throws -> Response {
        do {
            var response = try await request.body.consumeWithCancellationOnInboundClose { _ in try await work() }
            response.headers[.connection] = "close"
            return response
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            var failure = error as? ServingError ?? ServingError(error)
            failure.closesConnection = true
            throw failure
        }
    }

    // MARK: - Validation

    private func prepare(_ kind: Kind, _ data: Data, arrival: ContinuousClock.Instant, model: inout String) async throws
        -> Prepared
    {
        let fields: SamplingFields
        do { fields = try JSONDecoder.openAI.decode(SamplingFields.self, from: data) } catch {
            throw ServingError(decoding: error, body: data)
        }
        let (sampling, maxTokens, stop) = try fields.validated()
        let deployment = try await registry.deployment(named: fields.model)
        // Only deployed names become metric labels (clients cannot create series at will).
        model = deployment.name
        let tokenizer = deployment.tokenizer
        let contextLength = await deployment.contextLength
        var prompt: [Int]
        var topLogprobs = 0
        var logprobs = false
        var promptParam = "prompt"
        switch kind {
        case .chat:
            let chat: ChatCompletionRequest
            do { chat = try JSONDecoder.openAI.decode(ChatCompletionRequest.self, from: data) } catch {
                throw ServingError(decoding: error, body: data)
            }
            try chat.validate()
            logprobs = chat.logprobs ?? false
            topLogprobs = chat.topLogprobs ?? 0
            promptParam = "messages"
            try Self.refuseTextBeyondContext(
                chat.messages.reduce(0) { $0 + $1.content.utf8.count }, contextLength: contextLength, param: promptParam
            )
            let rendered: String
            do {
                rendered = try tokenizer.renderChat(
                    chat.messages.map { ChatMessage(role: $0.role, content: $0.content) })
            } catch {
                throw ServingError(
                    .invalidRequest, "the chat template of `\(fields.model)` rejected the messages: \(error)",
                    param: "messages")
            }
            try Self.refuseTextBeyondContext(rendered.utf8.count, contextLength: contextLength, param: promptParam)
            prompt = try tokenizer.encodeChatCancellable(rendered)
        case .text:
            let completion: CompletionRequest
            do { completion = try JSONDecoder.openAI.decode(CompletionRequest.self, from: data) } catch {
                throw ServingError(decoding: error, body: data)
            }
            try completion.validate()
            logprobs = completion.logprobs != nil
            topLogprobs = completion.logprobs ?? 0
            switch completion.prompt {
            case .text(let text):
                try Self.refuseTextBeyondContext(text.utf8.count, contextLength: contextLength, param: promptParam)
                prompt = try tokenizer.encodeCancellable(text)
            case .tokens(let tokens):
                if let bad = tokens.first(where: { !tokenizer.isValid($0) }) {
                    throw ServingError(
                        .invalidRequest, "token id \(bad) is outside the vocabulary (0..<\(tokenizer.vocabularySize))",
                        param: "prompt")
                }
                prompt = tokens
            }
        }
        guard !prompt.isEmpty else { throw ServingError(.invalidRequest, "the prompt is empty", param: promptParam) }
        if prompt.count >= contextLength {
            throw ServingError(
                .contextLengthExceeded,
                "this model's context is \(contextLength) tokens, but the prompt has \(prompt.count); shorten it",
                param: promptParam)
        }
        // Compared without adding: a client's max_tokens may be as large as Int.max.
        if let maxTokens, maxTokens > contextLength - prompt.count {
            throw ServingError(
                .contextLengthExceeded,
                "this model's context is \(contextLength) tokens, but \(prompt.count.addingReportingOverflow(maxTokens).overflow ? "more than \(Int.max)" : String(prompt.count + maxTokens)) were requested (\(prompt.count) in the prompt, \(maxTokens) to generate); lower max_tokens",
                param: fields.maxCompletionTokens != nil ? "max_completion_tokens" : "max_tokens")
        }
        let id = (kind == .chat ? "chatcmpl-" : "cmpl-") + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        var job = GenerationJob(
            id: id, prompt: prompt, sampling: sampling, maxTokens: maxTokens, stop: stop,
            logprobs: logprobs ? topLogprobs : nil)
        if fields.ignoreEos == true { job.stopAtEndOfGeneration = false }
        return Prepared(
            kind: kind, deployment: deployment, job: job, stream: fields.stream ?? false,
            includeUsage: fields.streamOptions?.includeUsage ?? false,
            keepAlive: fields.keepAlive, arrival: arrival, created: Int(Date().timeIntervalSince1970))
    }

    /// A token is rarely longer than a few bytes: text of more than this many bytes per token of
    /// context cannot fit and is refused before tokenizing (tokenizing megabytes costs seconds).
    static let maxBytesPerToken = 8

    private static func refuseTextBeyondContext(_ byteCount: Int, contextLength: Int, param: String)
        throws(ServingError)
    {
        guard byteCount > maxBytesPerToken * contextLength else { return }
        throw ServingError(
            .contextLengthExceeded,
            "this model's context is \(contextLength) tokens, but the prompt has \(byteCount) bytes (more than \(maxBytesPerToken) bytes per token of context); shorten it",
            param: param)
    }

    // MARK: - Whole responses

    private func wholeResponse(_ prepared: Prepared, ticket: Deployment.Ticket) async throws -> Response {
        var lease: Lease
        switch ticket {
        case .granted(let granted): lease = granted
        case .waiting(let id): lease = try await prepared.deployment.wait(for: id)
        }
        var text = ""
        var tokens: [TokenOutput] = []
        var summary: GenerationSummary?
        var firstToken: Double?
        var retries = 0
        while true {
            do {
                for try await event in prepared.deployment.run(prepared.job, on: lease, keepAlive: prepared.keepAlive) {
                    switch event {
                    case .token(let output):
                        if firstToken == nil { firstToken = seconds(since: prepared.arrival) }
                        text += output.text
                        if output.token >= 0 { tokens.append(output) }
                    case .finished(let done):
                        summary = done
                    case .detached:
                        break  // the deployment's run continues a migrated job; it never yields this
                    }
                }
                break
            } catch {
                guard
                    let retry = try await retryLost(error, prepared, sentNothing: firstToken == nil, retries: &retries)
                else { throw ServingError(error) }
                lease = retry
            }
        }
        // The client went away (its connection closed): the job was cancelled.
        try Task.checkCancellation()
        guard let summary else {
            throw ServingError(.unavailable, "the instance ended the request without finishing it")
        }
        record(prepared, lease: lease, summary: summary, firstToken: firstToken ?? seconds(since: prepared.arrival))

        var choice = JSONWriter()
        choice.int("index", 0)
        switch prepared.kind {
        case .chat:
            choice.object("message") { message in
                message.string("role", "assistant")
                message.string("content", text)
            }
            choice.raw("logprobs", prepared.logprobs ? chatLogprobs(tokens) : "null")
        case .text:
            choice.string("text", text)
            choice.raw("logprobs", prepared.logprobs ? completionLogprobs(tokens, startOffset: 0) : "null")
        }
        choice.string("finish_reason", summary.finishReason.rawValue)
        var json = header(prepared, object: prepared.kind == .chat ? "chat.completion" : "text_completion")
        json.raw("choices", "[" + choice.finished + "]")
        json.raw("usage", usage(summary))
        json.raw("timings", timings(lease, summary: summary))
        return jsonResponse(json.finished)
    }

    // MARK: - Streaming

    private func streamingResponse(_ prepared: Prepared, ticket: Deployment.Ticket) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                try await stream(prepared, ticket: ticket, into: &writer)
            })
    }

    private func stream(_ prepared: Prepared, ticket: Deployment.Ticket, into writer: inout any ResponseBodyWriter)
        async throws
    {
        var lease: Lease
        do {
            lease = try await waitShowingProgress(prepared, ticket: ticket, writer: &writer)
        } catch is CancellationError {
            metrics.request(deployment: prepared.deployment.name, status: 499)
            return
        } catch {
            // Headers are out: report the failure in the stream, as OpenAI does mid-stream.
            let failure = ServingError(error)
            metrics.request(deployment: prepared.deployment.name, status: Int(failure.status.code))
            try? await send(String(decoding: failure.json, as: UTF8.self), to: &writer)
            try await writer.finish(nil)
            return
        }
        let chunkObject = prepared.kind == .chat ? "chat.completion.chunk" : "text_completion"
        var firstToken: Double?
        var summary: GenerationSummary?
        var offset = 0
        do {
            if prepared.kind == .chat {
                try await send(
                    chunk(
                        prepared, object: chunkObject,
                        choice: streamedChoice(.chat, #"{"role":"assistant","content":""}"#, logprobs: nil, finish: nil)
                    ), to: &writer)
            }
            var retries = 0
            while true {
                do {
                    for try await event in prepared.deployment.run(
                        prepared.job, on: lease, keepAlive: prepared.keepAlive)
                    {
                        if lifecycle.mustCutStreams {
                            throw ServingError(
                                .shuttingDown,
                                "the server shut down before this stream finished (its shutdown_timeout passed)")
                        }
                        switch event {
                        case .token(let output):
                            if firstToken == nil { firstToken = seconds(since: prepared.arrival) }
                            let logprobs: String? =
                                prepared.logprobs && output.token >= 0
                                ? (prepared.kind == .chat
                                    ? chatLogprobs([output]) : completionLogprobs([output], startOffset: offset)) : nil
                            offset += output.text.utf8.count
                            guard !output.text.isEmpty || logprobs != nil else { continue }
                            let content =
                                prepared.kind == .chat
                                ? "{\"content\":" + JSONWriter.quote(output.text) + "}" : output.text
                            let choice = streamedChoice(prepared.kind, content, logprobs: logprobs, finish: nil)
                            try await send(chunk(prepared, object: chunkObject, choice: choice), to: &writer)
                        case .detached:
                            continue  // the deployment's run continues a migrated job; it never yields this
                        case .finished(let done):
                            summary = done
                            let choice = streamedChoice(
                                prepared.kind, prepared.kind == .chat ? "{}" : "", logprobs: nil,
                                finish: done.finishReason.rawValue)
                            try await send(
                                chunk(
                                    prepared, object: chunkObject, choice: choice,
                                    timings: timings(lease, summary: done)),
                                to: &writer)
                        }
                    }
                    break
                } catch {
                    // Nothing of the answer was sent: a lost worker's request starts again elsewhere.
                    guard
                        let retry = try await retryLost(
                            error, prepared, sentNothing: firstToken == nil, retries: &retries)
                    else { throw error }
                    lease = retry
                }
            }
        } catch {
            if let failure = error as? ServingError {
                metrics.request(deployment: prepared.deployment.name, status: Int(failure.status.code))
                try? await send(String(decoding: failure.json, as: UTF8.self), to: &writer)
                if failure.kind == .shuttingDown { try? await writer.write(ByteBuffer(string: "data: [DONE]\n\n")) }
                try? await writer.finish(nil)
            } else {
                // The client went away: the job was cancelled when its stream was dropped.
                metrics.request(deployment: prepared.deployment.name, status: 499)
            }
            return
        }
        guard let summary else {
            metrics.request(deployment: prepared.deployment.name, status: 503)
            try? await writer.finish(nil)
            return
        }
        record(prepared, lease: lease, summary: summary, firstToken: firstToken ?? seconds(since: prepared.arrival))
        if prepared.includeUsage {
            var json = header(prepared, object: chunkObject)
            json.raw("choices", "[]")
            json.raw("usage", usage(summary))
            try? await send(json.finished, to: &writer)
        }
        try? await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
        try? await writer.finish(nil)
    }

    /// A request whose worker was lost before it produced anything runs again on a new slot (the
    /// lost instance is dropped, and placement passes its worker over): at most twice. Returns
    /// the new lease, or nil when `error` is not that case (the caller reports it).
    private func retryLost(_ error: any Error, _ prepared: Prepared, sentNothing: Bool, retries: inout Int)
        async throws -> Lease?
    {
        guard (error as? ServingError)?.kind == .workerLost, sentNothing, retries < 2 else { return nil }
        retries += 1
        logger.warning(
            "the worker of a request was lost before it answered; running it on another instance",
            metadata: ["deployment": "\(prepared.deployment.name)", "error": "\(error)"])
        return try await prepared.deployment.acquire()
    }

    /// Waits for the slot, sending `: loading 42%` comment lines every 250 ms meanwhile (OpenAI
    /// clients ignore comments; they keep the connection alive and show a cold start's progress).
    private func waitShowingProgress(
        _ prepared: Prepared, ticket: Deployment.Ticket, writer: inout any ResponseBodyWriter
    ) async throws -> Lease {
        guard case .waiting(let id) = ticket else {
            if case .granted(let lease) = ticket { return lease }
            throw ServingError(.internalError, "unreachable ticket state")
        }
        enum Event: Sendable {
            case tick
            case done(Result<Lease, any Error>)
        }
        let deployment = prepared.deployment
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        let waiter = Task {
            do {
                continuation.yield(.done(.success(try await deployment.wait(for: id))))
            } catch {
                continuation.yield(.done(.failure(error)))
            }
        }
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                continuation.yield(.tick)
            }
        }
        defer {
            ticker.cancel()
            continuation.finish()
        }
        for await event in events {
            switch event {
            case .tick:
                if lifecycle.mustCutStreams {
                    waiter.cancel()
                    await deployment.cancelWaiter(id)
                    throw ServingError(
                        .shuttingDown,
                        "the server shut down before this request got an instance (its shutdown_timeout passed)")
                }
                let fraction = deployment.startingProgress() ?? 1
                do {
                    try await writer.write(ByteBuffer(string: ": loading \(Int(fraction * 100))%\n\n"))
                } catch {
                    waiter.cancel()
                    // The slot may have been granted meanwhile; the deployment returns it.
                    await deployment.cancelWaiter(id)
                    throw CancellationError()
                }
            case .done(let result):
                return try result.get()
            }
        }
        throw CancellationError()
    }

    private func send(_ json: String, to writer: inout any ResponseBodyWriter) async throws {
        try await writer.write(ByteBuffer(string: "data: " + json + "\n\n"))
    }

    // MARK: - JSON pieces

    private func header(_ prepared: Prepared, object: String) -> JSONWriter {
        var json = JSONWriter()
        json.string("id", prepared.job.id)
        json.string("object", object)
        json.int("created", prepared.created)
        json.string("model", prepared.deployment.name)
        json.string("system_fingerprint", "sllm")
        return json
    }

    private func chunk(_ prepared: Prepared, object: String, choice: String, timings: String? = nil) -> String {
        var json = header(prepared, object: object)
        json.raw("choices", "[" + choice + "]")
        if prepared.includeUsage { json.raw("usage", "null") }
        if let timings { json.raw("timings", timings) }
        return json.finished
    }

    /// A streamed choice: chat carries a `delta` object, completions carry `text`.
    private func streamedChoice(_ kind: Kind, _ content: String, logprobs: String?, finish: String?) -> String {
        var json = JSONWriter()
        json.int("index", 0)
        if kind == .chat { json.raw("delta", content) } else { json.string("text", content) }
        json.raw("logprobs", logprobs ?? "null")
        json.string("finish_reason", finish)
        return json.finished
    }

    /// Chat logprobs: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}`.
    private func chatLogprobs(_ tokens: [TokenOutput]) -> String {
        func entry(_ piece: String, _ logprob: Float) -> JSONWriter {
            var json = JSONWriter()
            json.string("token", piece)
            json.number("logprob", Double(logprob))
            json.raw("bytes", JSONWriter.array(Array(piece.utf8)) { String($0) })
            return json
        }
        let content = JSONWriter.array(tokens) { token in
            var json = entry(token.piece, token.logprob)
            json.raw("top_logprobs", JSONWriter.array(token.top) { entry($0.piece, $0.logprob).finished })
            return json.finished
        }
        return "{\"content\":" + content + "}"
    }

    /// Legacy completions logprobs: parallel lists of tokens, their logprobs, the top
    /// alternatives as `{token: logprob}` and text offsets.
    private func completionLogprobs(_ tokens: [TokenOutput], startOffset: Int) -> String {
        var offsets: [Int] = []
        var offset = startOffset
        for token in tokens {
            offsets.append(offset)
            offset += token.piece.utf8.count
        }
        var json = JSONWriter()
        json.raw("tokens", JSONWriter.array(tokens) { JSONWriter.quote($0.piece) })
        json.raw("token_logprobs", JSONWriter.array(tokens) { JSONWriter.format(Double($0.logprob)) })
        json.raw(
            "top_logprobs",
            JSONWriter.array(tokens) { token in
                var top = JSONWriter()
                for alternative in token.top { top.number(alternative.piece, Double(alternative.logprob)) }
                return top.finished
            })
        json.raw("text_offset", JSONWriter.array(offsets) { String($0) })
        return json.finished
    }

    private func usage(_ summary: GenerationSummary) -> String {
        var json = JSONWriter()
        json.int("prompt_tokens", summary.promptTokens)
        json.int("completion_tokens", summary.completionTokens)
        json.int("total_tokens", summary.promptTokens + summary.completionTokens)
        json.object("prompt_tokens_details") { $0.int("cached_tokens", summary.cachedTokens) }
        return json.finished
    }

    /// Where the time went (llama.cpp's `timings` extension, with the cold-start phases).
    private func timings(_ lease: Lease, summary: GenerationSummary) -> String {
        let phases = ColdStartPhases(lease: lease)
        var json = JSONWriter()
        json.bool("cold_start", lease.coldStart)
        json.string("tier", lease.coldStart ? lease.instance.tier.rawValue : nil)
        json.number("queue_ms", phases.queue * 1000)
        json.number("load_ms", phases.load * 1000)
        json.number("init_ms", phases.engineInit * 1000)
        json.number("prefill_ms", summary.prefillSeconds * 1000)
        json.number("first_token_ms", summary.firstTokenSeconds * 1000)
        json.int("prompt_n", summary.promptTokens)
        json.int("predicted_n", summary.completionTokens)
        json.number("predicted_ms", summary.decodeSeconds * 1000)
        return json.finished
    }

    private func record(_ prepared: Prepared, lease: Lease, summary: GenerationSummary, firstToken: Double) {
        let name = prepared.deployment.name
        if logger.logLevel <= .info {
            let path = prepared.kind == .chat ? "/v1/chat/completions" : "/v1/completions"
            logger.info(
                """
                POST \(path) 200 model=\(name) prompt_tokens=\(summary.promptTokens) completion_tokens=\(summary.completionTokens) \
                finish=\(summary.finishReason.rawValue) stream=\(prepared.stream) cold_start=\(lease.coldStart) \
                ttft_ms=\(String(format: "%.1f", firstToken * 1000)) total_ms=\(String(format: "%.1f", seconds(since: prepared.arrival) * 1000))
                """)
        }
        let interToken =
            summary.completionTokens > 1 ? summary.decodeSeconds / Double(summary.completionTokens - 1) : nil
        metrics.request(deployment: name, status: 200, firstToken: firstToken, interToken: interToken)
        metrics.tokens(deployment: name, prompt: summary.promptTokens, completion: summary.completionTokens)
        metrics.timeToFirstToken(deployment: name, seconds: firstToken)
        if lease.coldStart {
            let phases = ColdStartPhases(lease: lease)
            metrics.coldStart(
                deployment: name, queue: phases.queue, load: phases.load, engineInit: phases.engineInit,
                prefill: summary.prefillSeconds)
            metrics.activity.coldStart(
                ConsoleActivity.ColdStart(
                    at: Date(), deployment: name, instance: lease.instance.id, node: lease.node.id.rawValue,
                    tier: lease.instance.tier.rawValue, queueSeconds: phases.queue, loadSeconds: phases.load,
                    initSeconds: phases.engineInit, prefillSeconds: summary.prefillSeconds,
                    firstTokenSeconds: firstToken, promptTokens: summary.promptTokens,
                    weightBytes: lease.instance.weightBytes, fetchedBytes: lease.instance.fetchedBytes,
                    fetchSeconds: lease.instance.fetchSeconds, verifySeconds: lease.instance.verifySeconds))
        }
    }

    private func jsonResponse(_ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// A cold start's time before the engine ran: waiting, loading the checkpoint, starting the engine.
struct ColdStartPhases {
    var queue: Double
    var load: Double
    var engineInit: Double

    init(lease: Lease) {
        if lease.coldStart {
            load = lease.instance.loadSeconds
            engineInit = lease.instance.engineInitSeconds
            queue = max(0, lease.waitedSeconds - load - engineInit)
        } else {
            load = 0
            engineInit = 0
            queue = lease.waitedSeconds
        }
    }
}
