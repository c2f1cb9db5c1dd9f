import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Serving
import Store

/// The worker protocol on the wire: every ``Worker`` call is one `POST /worker/v1/call` whose
/// JSON body is a ``WorkerCall``; both ends use these same Codable types.
///
/// A call answers a ``WireReply`` (a value or an error). A call that streams (a pull, an instance
/// start, a generation) answers newline-delimited JSON, one ``WireLine`` per line: events, then
/// `end`, or an `error`. A stream cut without `end` (a dead worker, a broken link) is an error at
/// the controller, never a normal finish. Each request names the protocol version in the
/// `sllm-worker-protocol` header and its answer names the worker's; a mismatch is refused with a
/// message saying to run one sllm version across the cluster.
public enum WorkerWire {
    public static let version = 3
    public static let versionHeader = "sllm-worker-protocol"
    /// The epoch of the leader sending a worker call, when controllers share a database
    /// (``Leadership``): a worker refuses calls of an epoch older than one it has seen.
    public static let epochHeader = "sllm-leader-epoch"
    public static let callPath = "/worker/v1/call"
    /// The largest call body a worker reads (a generation job carries its prompt's token ids).
    public static let maxCallBytes = 32 << 20

    /// A cluster call as sent: `POST url` with the token, the version header and `body` as JSON
    /// (worker calls from controllers, leases from workers).
    static func request(_ url: String, token: String, body: some Encodable) throws -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: versionHeader, value: String(version))
        request.body = .bytes(ByteBuffer(bytes: try JSONEncoder.wire.encode(body)))
        return request
    }
}

/// One ``Worker`` call.
enum WorkerCall: Codable, Sendable {
    case inventory
    case modelFacts(ModelName)
    case resolve(String)
    case pull(source: String, name: ModelName)
    case prefetch(ModelName, Tier)
    case evict(ModelName, Tier)
    case verifyCache(ModelName?)
    case startInstance(InstanceSpec)
    case stopInstance(String)
    case run(GenerationJob, instance: String)
    case cancel(job: String, instance: String)
    case snapshot(job: String, instance: String)
    case warm([Int], instance: String)
    case detach(job: String, instance: String)

    /// Its name in logs.
    var name: String {
        switch self {
        case .inventory: "inventory"
        case .modelFacts: "modelFacts"
        case .resolve: "resolve"
        case .pull: "pull"
        case .prefetch: "prefetch"
        case .evict: "evict"
        case .verifyCache: "verifyCache"
        case .startInstance: "startInstance"
        case .stopInstance: "stopInstance"
        case .run: "run"
        case .cancel: "cancel"
        case .snapshot: "snapshot"
        case .warm: "warm"
        case .detach: "detach"
        }
    }
}

/// An error as it crosses the wire: the serving layer's kind (which decides the HTTP status the
/// controller answers), its message and the request field at fault.
struct WireError: Codable, Sendable, Error {
    var kind: String
    var message: String
    var param: String?

    init(_ error: any Error) {
        let serving = ServingError(error)
        kind = serving.kind.rawValue
        message = serving.message
        param = serving.param
    }

    var serving: ServingError {
        ServingError(ServingError.Kind(rawValue: kind) ?? .internalError, message, param: param)
    }
}

/// A call's answer.
enum WireReply<Value: Codable & Sendable>: Codable, Sendable {
    case value(Value)
    case error(WireError)

    /// The value, or the error the other end sent.
    func get() throws(ServingError) -> Value {
        switch self {
        case .value(let value): return value
        case .error(let error): throw error.serving
        }
    }
}

/// A line of a streamed answer.
enum WireLine<Event: Codable & Sendable>: Codable, Sendable {
    case event(Event)
    case error(WireError)
    case end
}

/// The answer of a call that returns nothing.
struct WireDone: Codable, Sendable {}

extension JSONEncoder {
    /// How both ends write the protocol's JSON: dates as seconds (exact), and the infinite
    /// log-probabilities of masked tokens as strings (JSON has no infinity).
    static var wire: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }
}

extension JSONDecoder {
    static var wire: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }
}
