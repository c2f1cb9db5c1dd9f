import Foundation
import Hummingbird
import Logging
import Store

/// One access-log line per request at info level, as llama-server and Ollama print them:
/// method, path, status and total time. Successful generation requests are logged by their
/// handler instead, when they finish (a stream ends long after its headers), with the model,
/// tokens and time to first token.
struct AccessLogMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let logger: Logger

    static let generationPaths: Set<[String]> = [["v1", "chat", "completions"], ["v1", "completions"]]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            // Generation requests log their own line when they finish (with model and tokens);
            // the router's split of the path is only made for a path that may be one.
            let generation =
                response.status == .ok && request.uri.path.contains("completions")
                && Self.generationPaths.contains(RouterPath(request.uri.path).components.map(\.description))
            // Lease renewals (several a second from each worker) are logged only at debug.
            let renewal = response.status == .ok && request.uri.path == "/cluster/v1/lease"
            if !generation && !renewal {
                Self.log(logger, request, status: Int(response.status.code), start: start)
            }
            return response
        } catch {
            let status = (error as? ServingError)?.status.code ?? (error as? HTTPError)?.status.code ?? 500
            Self.log(logger, request, status: Int(status), start: start)
            throw error
        }
    }

    static func log(
        _ logger: Logger, _ request: Request, status: Int, start: ContinuousClock.Instant, details: String = ""
    ) {
        guard logger.logLevel <= .info else { return }
        let milliseconds = String(format: "%.1f", seconds(since: start) * 1000)
        logger.info("\(request.method) \(request.uri.path) \(status)\(details) total_ms=\(milliseconds)")
    }
}
