import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Scheduling
import TestSupport
import Testing

@testable import Cluster
@testable import Serving

/// A controller in this process with its membership mounted, workers joining it through real
/// lease renewals over HTTP.
final class ControllerHarness: Sendable {
    let server: Server
    let membership: Membership
    let port: Int
    let directory: TemporaryDirectory
    let log: PostgresLeaseLog?
    private let task: Task<Void, any Error>

    var url: URL { URL(string: "http://127.0.0.1:\(port)")! }

    static func start(
        lease: Duration, state: (any StateStore)? = nil, postgres: PostgresStateStore? = nil, adminKey: String? = nil
    )
        async throws -> ControllerHarness
    {
        let directory = try TemporaryDirectory("controller")
        var configuration = ServeConfiguration(dataDirectory: directory.path)
        configuration.port = 0
        configuration.defaultModel = ""
        configuration.adminKey = adminKey
        var logger = Logger(label: "test.controller")
        logger.logLevel = .warning
        let store: any StateStore = try postgres ?? state ?? SQLiteStateStore(path: directory.file("state.sqlite"))
        let server = try await Server(
            configuration: configuration, workers: [],
            placement: LocalityPlacement(assumedBandwidth: LocalityPlacement.untilMeasured),
            state: store, logger: logger)
        let log = postgres.map { PostgresLeaseLog(store: $0, logger: logger) }
        let membership = Membership(
            server: server, token: WorkerHarness.token, client: WorkerHarness.client, lease: lease, log: log,
            logger: logger)
        server.mount(try MembershipRoutes(membership: membership, token: WorkerHarness.token))
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let task = Task { try await server.run(signals: false) { continuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw PostgresServerError("the controller did not start") }
        return ControllerHarness(
            server: server, membership: membership, port: port, directory: directory, log: log, task: task)
    }

    private init(
        server: Server, membership: Membership, port: Int, directory: TemporaryDirectory, log: PostgresLeaseLog?,
        task: Task<Void, any Error>
    ) {
        self.server = server
        self.membership = membership
        self.port = port
        self.directory = directory
        self.log = log
        self.task = task
    }

    func stop() async {
        await server.shutdown()
        _ = try? await task.value
        directory.remove()
    }

    /// Renews `worker`'s lease with this controller until the returned task is cancelled (then
    /// it stops renewing without leaving: a worker that died).
    func renew(_ worker: WorkerHarness, boot: String? = nil) -> Task<URL?, Never> {
        var logger = Logger(label: "test.renewer")
        logger.logLevel = .error
        let renewer = LeaseRenewer(
            controllers: [url], worker: worker.local, url: { worker.url.absoluteString }, token: WorkerHarness.token,
            client: WorkerHarness.client, logger: logger, boot: boot ?? UUID().uuidString)
        return Task { await renewer.renewals() }
    }

    /// Waits (up to `limit`) until the members are `nodes`; returns the seconds it took.
    @discardableResult
    func waitForMembers(_ nodes: [String], limit: Duration = .seconds(60)) async throws -> Double {
        let start = ContinuousClock.now
        while await membership.nodes.map(\.rawValue) != nodes {
            guard ContinuousClock.now - start < limit else {
                throw PostgresServerError("members are \(await membership.nodes), not \(nodes)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return (ContinuousClock.now - start).secondsValue
    }

    /// POSTs `body` to a `/cluster/...` path with the given headers.
    func post(_ path: String, body: Data, headers: [(String, String)]) async throws -> (Int, String) {
        var request = HTTPClientRequest(url: url.absoluteString + path)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await WorkerHarness.client.execute(request, timeout: .seconds(30))
        let answer = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: answer))
    }

    static let goodHeaders = [
        ("Authorization", "Bearer \(WorkerHarness.token)"), ("sllm-worker-protocol", String(WorkerWire.version)),
    ]
}

extension Duration {
    var secondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}

@Suite(.serialized) struct MembershipTests {
    /// A worker joins by renewing, is lost when it stops, and joins again when it comes back (the
    /// same run: its instance, still running, is adopted by its deployment, or stopped once the
    /// deployment is gone; a new run: a new membership). Every step is recorded in PostgreSQL's
    /// `worker` table.
    @Test func workersJoinAreLostAndComeBack() async throws {
        let postgres = try PostgresServer.start()
        let (database, url) = try postgres.createDatabase("membership")
        let store = try await PostgresStateStore.open(try PostgresLocation(url: url))
        defer { store.close() }
        // Longer than the default: renewals run on the test process's cooperative pool, which the
        // parallel suite can starve for seconds on 2 cores (the node was lost before its
        // instance started, twice in CI with 3 s).
        let controller = try await ControllerHarness.start(lease: .seconds(10), postgres: store)
        let worker = try await WorkerHarness.start(node: "node-m")
        defer { worker.remove() }

        var renewing = controller.renew(worker, boot: "boot-1")
        try await controller.waitForMembers(["node-m"])
        let inventory = await controller.server.registry.nodeReports()
        #expect(inventory.map(\.state) == ["alive"])

        // A running instance there, started through the controller.
        var request = DeploymentRequest()
        request.model = "smollm2-135m"
        request.minInstances = 1
        _ = try await controller.server.registry.deploy(request)
        var instance: String?
        for _ in 0..<3000 where instance == nil {
            instance = await worker.local.inventory().instances.first
            try await Task.sleep(for: .milliseconds(20))
        }
        let placed = try #require(instance)

        // It stops renewing (a partition: the process and its instance live on).
        renewing.cancel()
        _ = await renewing.value
        let detected = try await controller.waitForMembers([], limit: .seconds(30))
        #expect(detected < 30)
        let lost = await controller.server.registry.nodeReports()
        #expect(lost.map(\.state) == ["lost"] && lost.first?.reason?.contains("no lease renewal") == true)
        #expect(await controller.server.instances(on: NodeID("node-m")).isEmpty)

        // It comes back (the same run): it is a member again, and the instance that ran on is
        // adopted by its deployment (no second one is started for the minimum).
        renewing = controller.renew(worker, boot: "boot-1")
        try await controller.waitForMembers(["node-m"])
        for _ in 0..<3000 where await controller.server.instances(on: NodeID("node-m")).isEmpty {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(await controller.server.instances(on: NodeID("node-m")) == [placed])
        try await Task.sleep(for: .milliseconds(300))
        #expect(await worker.local.inventory().instances == [placed])

        // Lost again; its deployment is deleted meanwhile: back, the instance nobody takes is stopped.
        renewing.cancel()
        _ = await renewing.value
        try await controller.waitForMembers([], limit: .seconds(30))
        try await controller.server.registry.delete("smollm2-135m")
        renewing = controller.renew(worker, boot: "boot-1")
        try await controller.waitForMembers(["node-m"])
        for _ in 0..<3000 where await !worker.local.inventory().instances.isEmpty {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(await worker.local.inventory().instances.isEmpty)

        await controller.log?.flush()
        let row = try postgres.psql(
            database, "SELECT state || ' ' || boot || ' ' || url FROM worker WHERE node = 'node-m'")
        #expect(row.contains("alive boot-1 \(worker.url.absoluteString)"), "\(row)")

        // A new run of the worker replaces the membership; leaving ends it at once.
        renewing.cancel()
        _ = await renewing.value
        renewing = controller.renew(worker, boot: "boot-2")
        try await Task.sleep(for: .milliseconds(200))
        #expect(await controller.membership.nodes == [NodeID("node-m")])
        renewing.cancel()
        _ = await renewing.value
        await controller.membership.leave(LeaveRequest(node: NodeID("node-m"), boot: "boot-1"))
        #expect(await controller.membership.nodes == [NodeID("node-m")], "a stale run's leave is ignored")
        await controller.membership.leave(LeaveRequest(node: NodeID("node-m"), boot: "boot-2"))
        #expect(await controller.membership.nodes.isEmpty)
        #expect(await controller.server.registry.nodeReports().map(\.state) == ["left"])

        await controller.stop()
        await worker.stop()
        let ended = try postgres.psql(database, "SELECT state || ' ' || boot FROM worker WHERE node = 'node-m'")
        #expect(ended.contains("left boot-2"), "\(ended)")
    }

    /// `/cluster/...` needs the cluster token and the protocol version, takes only well-formed
    /// leases and leaves, and answers every other input with an error, whatever the path's spelling; the
    /// controller's keys do not open it, and it opens nothing else.
    @Test func strangersAndBadLeasesAreRefused() async throws {
        let controller = try await ControllerHarness.start(lease: .seconds(3), adminKey: "admin-key-for-cluster-test")
        let inventory = NodeInventory(
            node: NodeID("n1"), cores: 2, threadsPerInstance: 2, memoryBudgetBytes: 1 << 30, reservedBytes: 0,
            dramBudgetBytes: 0, tiers: [], instances: [], runningJobs: 0)
        let good = try JSONEncoder().encode(
            LeaseRequest(node: NodeID("n1"), url: "http://127.0.0.1:9", boot: "b", inventory: inventory))

        for headers in [
            [("sllm-worker-protocol", String(WorkerWire.version))],
            [
                ("Authorization", "Bearer wrong-token-wrong-token-00"),
                ("sllm-worker-protocol", String(WorkerWire.version)),
            ],
            [
                ("Authorization", "Bearer admin-key-for-cluster-test"),
                ("sllm-worker-protocol", String(WorkerWire.version)),
            ],
            [("Authorization", "Basic \(WorkerHarness.token)"), ("sllm-worker-protocol", String(WorkerWire.version))],
        ] {
            let (status, _) = try await controller.post(LeaseWire.leasePath, body: good, headers: headers)
            #expect(status == 401)
        }
        let (version, answer) = try await controller.post(
            LeaseWire.leasePath, body: good, headers: [("Authorization", "Bearer \(WorkerHarness.token)")])
        #expect(version == 400 && answer.contains("run one sllm version"), "\(answer)")

        // Path spellings reach neither the lease nor the admin API without the right credentials.
        for path in [
            "/cluster/v1/lease/", "/cluster//v1/lease", "/CLUSTER/v1/lease", "/cluster/v1/../v1/lease",
            "/cluster/../admin/keys", "/cluster/%2e%2e/admin/keys", "/cluster/v1/lease%00", "/cluster/v1/lease?x=1",
            "/cluster/v1/%6cease", "/cluster",
        ] {
            let (status, body) = try await controller.post(path, body: good, headers: [])
            #expect([401, 404].contains(status), "\(path): \(status) \(body)")
            #expect(!body.contains("admin-key") && !body.contains("\"leaseSeconds\""), "\(path): \(body)")
        }

        // Hostile leases: each refused with what was wrong.
        func lease(node: String = "n1", url: String = "http://127.0.0.1:9", boot: String = "b") throws -> Data {
            var inventory = inventory
            inventory.node = NodeID(node)
            return try JSONEncoder().encode(
                LeaseRequest(node: NodeID(node), url: url, boot: boot, inventory: inventory))
        }
        for (body, expected) in [
            (try lease(node: ""), "node name"), (try lease(node: "a b"), "node name"),
            (try lease(node: String(repeating: "n", count: 200)), "node name"),
            (try lease(node: "n\u{0}"), "node name"),
            (try lease(url: "file:///etc/passwd"), "url"), (try lease(url: "http://127.0.0.1:9/x"), "url"),
            (try lease(url: "http://user:pw@127.0.0.1:9"), "url"), (try lease(url: ""), "url"),
            (try lease(boot: ""), "boot"), (Data("{}".utf8), "not a LeaseRequest"), (Data(), "not a LeaseRequest"),
            (Data(repeating: 0x7B, count: 5 << 20), "not a LeaseRequest"),
        ] {
            let (status, answer) = try await controller.post(
                LeaseWire.leasePath, body: body, headers: ControllerHarness.goodHeaders)
            #expect(status == 400 && answer.contains(expected), "\(expected): \(status) \(answer.prefix(300))")
        }
        // An inventory of another node than the lease's.
        var other = inventory
        other.node = NodeID("n2")
        let mismatched = try JSONEncoder().encode(
            LeaseRequest(node: NodeID("n1"), url: "http://127.0.0.1:9", boot: "b", inventory: other))
        let (mismatch, mismatchAnswer) = try await controller.post(
            LeaseWire.leasePath, body: mismatched, headers: ControllerHarness.goodHeaders)
        #expect(mismatch == 400 && mismatchAnswer.contains("inventory"), "\(mismatchAnswer)")

        // Fuzz: mutated leases never crash the controller; each gets an answer.
        var random = SeededGenerator(seed: 15)
        let base = Array(good)
        for round in 0..<300 {
            var bytes = base
            for _ in 0..<(1 + round % 8) {
                let index = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes[index] = UInt8.random(in: 0...255, using: &random)
                case 1: bytes.remove(at: index)
                default: bytes.insert(UInt8.random(in: 0...255, using: &random), at: index)
                }
            }
            let (status, _) = try await controller.post(
                LeaseWire.leasePath, body: Data(bytes), headers: ControllerHarness.goodHeaders)
            #expect([200, 400].contains(status), "round \(round): \(status)")
        }
        // The same for leaves: mutated ones are answered (a leave of no member changes nothing).
        let leave = Array(try JSONEncoder().encode(LeaveRequest(node: NodeID("n1"), boot: "b")))
        for round in 0..<150 {
            var bytes = leave
            for _ in 0..<(1 + round % 6) {
                let index = Int.random(in: 0..<bytes.count, using: &random)
                if Bool.random(using: &random) {
                    bytes[index] = UInt8.random(in: 0...255, using: &random)
                } else {
                    bytes.remove(at: index)
                }
            }
            let (status, _) = try await controller.post(
                LeaseWire.leavePath, body: Data(bytes), headers: ControllerHarness.goodHeaders)
            #expect([200, 400].contains(status), "leave round \(round): \(status)")
        }
        // Still serving: a well-formed lease is granted (its node is never reached, and is lost).
        let (granted, grant) = try await controller.post(
            LeaseWire.leasePath, body: good, headers: ControllerHarness.goodHeaders)
        #expect(granted == 200 && grant.contains("leaseSeconds"), "\(grant)")
        await controller.stop()
    }
}
