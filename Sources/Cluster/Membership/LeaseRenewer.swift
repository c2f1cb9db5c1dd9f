public import AsyncHTTPClient
public import Foundation
public import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
public import ServiceLifecycle
public import Serving

/// A worker's side of the lease protocol (`sllm worker --controller URL`): joins the first
/// controller that answers and renews its lease as the grant says, with its inventory each
/// time. A controller that does not answer is left for the next one given (workers get every
/// controller's URL); a refused renewal (a wrong token, another protocol version) is logged with
/// the controller's reason and retried, since the operator may fix it. At shutdown the worker
/// leaves, so the controller does not wait out the lease.
public struct LeaseRenewer: Service {
    let controllers: [URL]
    let worker: any Worker
    let url: @Sendable () async -> String
    let token: String
    let client: HTTPClient
    let logger: Logger
    /// This run of the process.
    public let boot: String

    /// - Parameters:
    ///   - controllers: the controllers' base URLs, tried in order.
    ///   - url: where this worker's protocol answers, as the controllers should reach it (asked
    ///     once the server is bound).
    public init(
        controllers: [URL], worker: any Worker, url: @escaping @Sendable () async -> String, token: String,
        client: HTTPClient, logger: Logger, boot: String = UUID().uuidString
    ) {
        self.boot = boot
        self.controllers = controllers
        self.worker = worker
        self.url = url
        self.token = token
        self.client = client
        self.logger = logger
    }

    public func run() async throws {
        let joined = await cancelWhenGracefulShutdown { await renewals() }
        guard let controller = joined ?? controllers.first else { return }
        // The controller moves this node's running requests elsewhere before it answers.
        let _: WireDone? = try? await post(
            LeaseWire.leavePath, LeaveRequest(node: worker.node, boot: boot), to: controller,
            timeout: LeaseWire.drainTimeout)
    }

    /// Renews until cancelled; returns the controller that granted the last renewal.
    func renewals() async -> URL? {
        var index = 0
        var joined: URL?
        var lastProblem = ""
        /// The leader a controller that does not lead named: asked next.
        var redirect: URL?
        let url = await self.url()
        while !Task.isCancelled {
            let controller = redirect ?? controllers[index]
            redirect = nil
            do {
                let request = LeaseRequest(node: worker.node, url: url, boot: boot, inventory: await worker.inventory())
                let grant: LeaseGrant = try await post(LeaseWire.leasePath, request, to: controller)
                guard grant.granted else {
                    // Not the leader: go to the one it names, or on through the list.
                    if let leader = grant.leader.flatMap(LeaseRequest.checkedURL), leader != controller {
                        redirect = leader
                    } else {
                        index = (index + 1) % controllers.count
                        if index == 0 { try await Task.sleep(for: .milliseconds(250)) }
                    }
                    if joined != nil {
                        logger.info("the controller no longer leads", metadata: ["controller": "\(controller)"])
                        joined = nil
                    }
                    continue
                }
                if joined != controller {
                    logger.info(
                        "joined the controller",
                        metadata: ["controller": "\(controller)", "lease": "\(grant.leaseSeconds) s"])
                    joined = controller
                    lastProblem = ""
                }
                try await Task.sleep(for: .seconds(max(0.05, min(grant.renewSeconds, 60))))
            } catch {
                if Task.isCancelled { break }
                let problem = ServingError(error).message
                if problem != lastProblem {
                    logger.warning(
                        "cannot renew the lease", metadata: ["controller": "\(controller)", "error": "\(problem)"])
                    lastProblem = problem
                }
                joined = nil
                index = (index + 1) % controllers.count
                // Through the list at once, then a short pause before going round again.
                if index == 0 { try? await Task.sleep(for: .milliseconds(250)) }
            }
        }
        return joined
    }

    /// Posts `body` to a controller and decodes its ``WireReply``.
    private func post<Body: Encodable, Value: Codable & Sendable>(
        _ path: String, _ body: Body, to controller: URL, timeout: TimeAmount = .seconds(5)
    ) async throws -> Value {
        let request = try WorkerWire.request(controller.absoluteString + path, token: token, body: body)
        let response = try await client.execute(request, timeout: timeout)
        let data = try await response.body.collect(upTo: 1 << 20)
        guard let reply = try? JSONDecoder.wire.decode(WireReply<Value>.self, from: Data(buffer: data)) else {
            throw ServingError(
                .unavailable,
                "\(controller.absoluteString) answered HTTP \(response.status.code) without a lease reply (not an sllm controller?)"
            )
        }
        return try reply.get()
    }
}
