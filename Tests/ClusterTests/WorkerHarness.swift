import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import Serving
import Store
import TestSupport

@testable import Cluster

/// A worker served over HTTP in this process: a `LocalWorker` on the real model behind
/// ``WorkerRoutes`` on 127.0.0.1 and a free port, as `sllm worker` runs it.
final class WorkerHarness: Sendable {
    static let token = "test-cluster-token-0123456789"

    let local: LocalWorker
    let port: Int
    let directory: TemporaryDirectory
    private let task: Task<Void, any Error>

    var url: URL { URL(string: "http://127.0.0.1:\(port)")! }

    static func start(node: String = "node-a") async throws -> WorkerHarness {
        let directory = try TemporaryDirectory("worker-\(node)")
        try await RealModel.link(into: directory.file("home"), as: "smollm2-135m")
        var configuration = ServeConfiguration(dataDirectory: directory.file("home"))
        configuration.threads = 2
        configuration.dramCacheBytes = 512 << 20
        configuration.cacheDirectory = directory.file("cache")
        configuration.memoryBudgetBytes = 8 << 30
        configuration.dramFill = false
        var logger = Logger(label: "test.worker")
        logger.logLevel = .warning
        let local = try LocalWorker(configuration: configuration, node: NodeID(node), logger: logger)
        let routes = try WorkerRoutes(worker: local, token: token, checkpoints: local.loader, logger: logger)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: routes.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) }, logger: logger)
        let task = Task { try await app.runService() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw PostgresServerError("the worker did not start") }
        return WorkerHarness(local: local, port: port, directory: directory, task: task)
    }

    private init(local: LocalWorker, port: Int, directory: TemporaryDirectory, task: Task<Void, any Error>) {
        self.local = local
        self.port = port
        self.directory = directory
        self.task = task
    }

    /// Stops serving (as a worker process that dies: connections close).
    func stop() async {
        task.cancel()
        _ = try? await task.value
    }

    func remove() { directory.remove() }

    static let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: RemoteWorker.clientConfiguration)

    func remote() async throws -> RemoteWorker {
        var logger = Logger(label: "test.remote")
        logger.logLevel = .error
        return try await RemoteWorker.connect(url: url, token: Self.token, client: Self.client, logger: logger)
    }
}
