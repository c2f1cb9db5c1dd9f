import Checkpoint
public import Foundation
import Hummingbird
import NIOCore
import Store

/// The admin API (`/admin/...`): deployments, what is loaded, API keys. JSON with snake_case
/// keys; the `sllm deploy/update/delete/status/ps/keys` commands are its clients.
struct AdminRoutes: Sendable {
    let registry: DeploymentRegistry
    let keys: KeyRing
    let maxBodyBytes: Int

    func register(on routes: Routes) {
        routes.add(.get, "admin/deployments", .admin) { _, _ in try encode(await registry.statuses()) }
        routes.add(.post, "admin/deployments", .admin) { request, _ in
            let body = try await decode(DeploymentRequest.self, from: request)
            let spec = try await registry.deploy(body)
            return try encode(await registry.statuses().first { $0.status.spec.name == spec.name }, status: .created)
        }
        routes.add(.get, "admin/deployments/{name}", .admin) { _, context in
            let name = try context.parameters.require("name")
            guard let report = await registry.statuses().first(where: { $0.status.spec.name == name }) else {
                throw ServingError(.notFound, "deployment `\(name)` does not exist")
            }
            return try encode(report)
        }
        routes.add(.patch, "admin/deployments/{name}", .admin) { request, context in
            let name = try context.parameters.require("name")
            let body = try await decode(DeploymentRequest.self, from: request)
            _ = try await registry.update(name, with: body)
            return try encode(await registry.statuses().first { $0.status.spec.name == name })
        }
        routes.add(.delete, "admin/deployments/{name}", .admin) { _, context in
            let name = try context.parameters.require("name")
            try await registry.delete(name)
            return try encode(["deleted": name])
        }
        routes.add(.post, "admin/deployments/{name}/stop", .admin) { _, context in
            let name = try context.parameters.require("name")
            let (stopped, busy) = try await registry.unload(name)
            return try encode(["deployment": name, "stopped": String(stopped), "busy": String(busy)])
        }
        routes.add(.get, "admin/ps", .admin) { _, _ in
            var rows: [LoadedInstance] = []
            for report in await registry.statuses() {
                for instance in report.status.instances {
                    rows.append(
                        LoadedInstance(
                            deployment: report.status.spec.name, model: report.status.spec.model, instance: instance))
                }
            }
            return try encode(rows)
        }
        // Live migration: the instance's jobs continue on a new instance on `node` (or the
        // scheduler's choice); answers once every job was handed over.
        routes.add(.post, "admin/instances/{id}/migrate", .admin) { request, context in
            let id = try context.parameters.require("id")
            let body = try await decode(MigrateRequest.self, from: request, allowEmpty: true)
            if let node = body.node, node.isEmpty || node.utf8.count > 253 {
                throw ServingError(.invalidRequest, "`node` must name a node (1 to 253 bytes)", param: "node")
            }
            return try encode(try await registry.migrate(instance: id, to: body.node.map(NodeID.init)))
        }
        // Stops one instance, as `ollama stop` a model: now when idle, else once its requests end.
        routes.add(.post, "admin/instances/{id}/stop", .admin) { _, context in
            let id = try context.parameters.require("id")
            let serving = try await registry.stop(instance: id)
            return try encode(
                InstanceStopReply(
                    instance: id, stopping: serving == 0 ? "now" : "when its requests end", inFlight: serving))
        }
        routes.add(.get, "admin/nodes", .admin) { _, _ in try encode(await registry.nodeReports()) }
        // The scheduler's latest decisions, newest first (`?limit=N`, default 50, at most 1000).
        routes.add(.get, "admin/decisions", .admin) { request, _ in
            let given = request.uri.queryParameters.get("limit")
            guard let limit = given.map({ Int($0) }) ?? 50, (1...NodePool.keptDecisions).contains(limit) else {
                throw ServingError(
                    .invalidRequest, "limit must be a whole number from 1 to \(NodePool.keptDecisions)", param: "limit")
            }
            return try encode(Array(await registry.pool.decisions.suffix(limit).reversed()))
        }
        // Re-hashes DRAM copies now (of `model`, or of every cached model); corrupt ones are dropped.
        routes.add(.post, "admin/cache/verify", .admin) { request, _ in
            let body = try await decode(CacheVerifyRequest.self, from: request, allowEmpty: true)
            let model: ModelName?
            do { model = try body.model.map { try ModelName($0) } } catch {
                throw ServingError(.notFound, "model `\(body.model ?? "")` is not in the store", param: "model")
            }
            var results: [DRAMVerification] = []
            for node in await registry.pool.nodes { results += try await node.worker.verifyCache(model) }
            return try encode(
                CacheVerifyReport(verified: results, corrupt: results.filter { $0.corruptTensor != nil }.map(\.model)))
        }
        routes.add(.get, "admin/keys", .admin) { _, _ in try encode(try await keys.list()) }
        routes.add(.post, "admin/keys", .admin) { request, _ in
            let body = try await decode(KeyRequest.self, from: request)
            guard !body.name.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw ServingError(.invalidRequest, "a key needs a `name`", param: "name")
            }
            // A label for people and logs: printable, one line, and short.
            guard body.name.count <= 128,
                !body.name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            else {
                throw ServingError(
                    .invalidRequest, "a key's `name` must be at most 128 printable characters", param: "name")
            }
            let (key, secret) = try await keys.create(name: body.name, admin: body.admin ?? false)
            return try encode(
                CreatedKey(id: key.id, name: key.name, admin: key.admin, createdAt: key.createdAt, key: secret),
                status: .created)
        }
        routes.add(.delete, "admin/keys/{id}", .admin) { _, context in
            let id = try context.parameters.require("id")
            guard try await keys.revoke(id) else { throw ServingError(.notFound, "API key `\(id)` does not exist") }
            return try encode(["revoked": id])
        }
    }

    private func decode<T: Decodable>(_ type: T.Type, from request: Request, allowEmpty: Bool = false) async throws -> T
    {
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: maxBodyBytes) } catch {
            throw ServingError(.bodyTooLarge, "the request body exceeds the limit of \(maxBodyBytes) bytes")
        }
        if allowEmpty && buffer.readableBytes == 0 { return try JSONDecoder.iso.decode(type, from: Data("{}".utf8)) }
        try requireUTF8(buffer.readableBytesView)
        let data = Data(buffer.readableBytesView)
        do { return try JSONDecoder.iso.decode(type, from: data) } catch {
            throw ServingError(decoding: error, body: data)
        }
    }
}

/// Encodes an admin answer.
func encode(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(
        status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: try JSONEncoder.iso.encode(value))))
}

struct CacheVerifyRequest: Decodable {
    var model: String?
}

/// `POST /admin/cache/verify`: every copy checked, and the models whose copy was corrupt.
struct CacheVerifyReport: Encodable {
    var verified: [DRAMVerification]
    var corrupt: [String]
}

/// `POST /admin/instances/{id}/migrate`: the node to move to (none: the scheduler picks).
struct MigrateRequest: Decodable {
    var node: String?
}

struct KeyRequest: Decodable {
    var name: String
    var admin: Bool?
}

/// A key as created: the secret is shown this once.
struct CreatedKey: Encodable {
    var id: String
    var name: String
    var admin: Bool
    var createdAt: Date
    var key: String
}

/// One row of `sllm ps`.
public struct LoadedInstance: Sendable, Codable {
    public var deployment: String
    public var model: String
    public var instance: InstanceStatus
}

/// `POST /admin/instances/{id}/stop`: when the instance stops, and the requests it still serves.
struct InstanceStopReply: Codable {
    var instance: String
    var stopping: String
    var inFlight: Int
}

/// One node of `GET /admin/nodes`: a live one with its inventory, or one that was lost.
public struct NodeReport: Sendable, Codable {
    public var node: NodeID
    /// `alive`, `unreachable` (a member that does not answer), or `lost`.
    public var state: String
    /// Why it is unreachable or was lost.
    public var reason: String?
    /// When it was lost.
    public var since: Date?
    public var inventory: NodeInventory?
}
