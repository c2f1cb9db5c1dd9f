import Foundation
import HTTPTypes
public import Hummingbird
public import Logging
import NIOCore
import Serving
public import Store

/// A worker's checkpoints as its peers fetch them: `GET /cluster/v1/checkpoints/NAME/FILE`, behind
/// the cluster token like every worker path, with one byte range per request (`Range: bytes=a-b`,
/// `bytes=a-` or `bytes=-n`; 206) or the whole file (200).
///
/// Only the files a checkpoint's index names are served (the index itself, its small files, its
/// partitions), never a path. A checkpoint this node is still fetching is served too: a range
/// that has not arrived yet is sent once it has arrived and passed its checksums, so a scale-out
/// chains (each node forwards to the next what it has verified while it still receives). If that
/// fetch fails, the response ends short and the peer takes the range from another source.
public enum CheckpointRoutes {
    public static let path = "/cluster/v1/checkpoints"
    /// Bytes read and written at a time.
    static let pieceBytes = 1 << 20

    static func add(to router: Router<BasicRequestContext>, loader: ModelLoader, logger: Logger) {
        router.get(RouterPath(String(path.dropFirst()) + "/:model/:file")) { request, context in
            try await serve(request, context: context, loader: loader, logger: logger)
        }
    }

    /// The router of a remote store (`sllm store serve`): `GET /NAME/FILE`, what a node's
    /// `--remote BASE` fetches, served as a worker serves its peers but with no token (a
    /// read-only store of checkpoints, as an object store's public bucket); `GET /health`.
    public static func storeRouter(loader: ModelLoader, logger: Logger) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("health") { _, _ in "ok" }
        router.get(":model/:file") { request, context in
            try await serve(request, context: context, loader: loader, logger: logger)
        }
        return router
    }

    static func serve(_ request: Request, context: BasicRequestContext, loader: ModelLoader, logger: Logger)
        async throws -> Response
    {
        let modelText = context.parameters.get("model") ?? ""
        let fileName = context.parameters.get("file") ?? ""
        guard let model = try? ModelName(modelText) else {
            return refusal(.badRequest, "`\(brief(modelText))` is not a model name")
        }
        let file: CheckpointFile?
        // A peer told to relay from this node may ask before this node's own fetch has begun.
        let awaiting = request.headers[HTTPField.Name(CheckpointSource.awaitFetchHeader)!].flatMap(Double.init)
            .map { Duration.milliseconds(Int64(min(30, max(0, $0)) * 1000)) }
        do { file = try await loader.checkpointFile(model, file: fileName, awaiting: awaiting) } catch {
            return refusal(.internalServerError, "cannot open \(model)/\(brief(fileName)): \(error)")
        }
        guard let file else {
            return refusal(.notFound, "this node holds no file `\(brief(fileName))` of a checkpoint `\(model)`")
        }
        var status = HTTPResponse.Status.ok
        var range = 0..<file.byteCount
        var headers = HTTPFields()
        headers[.contentType] = "application/octet-stream"
        headers[.acceptRanges] = "bytes"
        if let header = request.headers[.range] {
            guard let asked = ByteRange.parse(header, size: file.byteCount) else {
                headers[.contentRange] = "bytes */\(file.byteCount)"
                return refusal(
                    .rangeNotSatisfiable,
                    "range `\(brief(header))` is not one byte range within \(file.byteCount) bytes",
                    headers: headers)
            }
            range = asked
            status = .partialContent
            headers[.contentRange] = "bytes \(asked.lowerBound)-\(asked.upperBound - 1)/\(file.byteCount)"
        }
        headers[.contentLength] = String(range.count)
        let served = range
        return Response(
            status: status, headers: headers,
            body: ResponseBody(contentLength: served.count) { writer in
                var offset = served.lowerBound
                while offset < served.upperBound {
                    let count = min(pieceBytes, served.upperBound - offset)
                    let bytes: [UInt8]
                    do { bytes = try await file.read(offset: offset, count: count) } catch {
                        // The headers are out: ending short tells the peer to take the rest elsewhere.
                        logger.warning(
                            "a served checkpoint read ended short",
                            metadata: ["model": "\(model)", "file": "\(file.name)", "error": "\(error)"])
                        throw error
                    }
                    try await writer.write(ByteBuffer(bytes: bytes))
                    offset += count
                }
                try await writer.finish(nil)
            })
    }

    private static func refusal(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = HTTPFields())
        -> Response
    {
        var headers = headers
        for field in WorkerRoutes.headers(contentType: "application/json") { headers[field.name] = field.value }
        let body =
            (try? JSONEncoder.wire.encode(
                WireReply<WireDone>.error(WireError(ServingError(kind(of: status), message)))))
            ?? Data()
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    private static func kind(of status: HTTPResponse.Status) -> ServingError.Kind {
        switch status {
        case .notFound: .notFound
        case .internalServerError: .internalError
        default: .invalidRequest
        }
    }

    /// At most 80 characters of a stranger's text, for a message.
    private static func brief(_ text: String) -> String { text.count > 80 ? text.prefix(77) + "..." : text }
}

/// One byte range of an HTTP `Range` header (RFC 9110): `bytes=a-b`, `bytes=a-`, `bytes=-n`.
enum ByteRange {
    /// The range asked of a `size`-byte file, clamped to it; nil when the header is not exactly
    /// one satisfiable range.
    static func parse(_ header: String, size: Int) -> Range<Int>? {
        guard header.hasPrefix("bytes="), size > 0 else { return nil }
        let spec = header.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return nil }
        let first = spec[..<dash]
        let last = spec[spec.index(after: dash)...]
        func number(_ text: Substring) -> Int? {
            guard !text.isEmpty, text.count <= 18, text.allSatisfy(\.isASCII), text.allSatisfy(\.isNumber) else {
                return nil
            }
            return Int(text)
        }
        if first.isEmpty {
            guard let suffix = number(last), suffix > 0 else { return nil }
            return max(0, size - suffix)..<size
        }
        guard let start = number(first), start < size else { return nil }
        if last.isEmpty { return start..<size }
        guard let end = number(last), end >= start else { return nil }
        return start..<min(end + 1, size)
    }
}
