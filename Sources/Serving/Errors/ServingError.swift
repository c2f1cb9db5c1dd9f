import Checkpoint
import Engine
import Foundation
public import Hummingbird
import NIOCore
public import Scheduling
import Store
import Tokenizers

/// An error of the serving layer, carrying what the OpenAI wire format needs: an HTTP status, an
/// error type and code, and the request parameter at fault.
public struct ServingError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure; decides the HTTP status and OpenAI error type.
    public enum Kind: String, Sendable {
        case invalidRequest
        case contextLengthExceeded
        case bodyTooLarge
        case unauthorized
        case forbidden
        case notFound
        case conflict
        case queueFull
        case shuttingDown
        case unavailable
        case insufficientMemory
        /// The instance serving the request can serve nothing more: its weights did not load
        /// (a streamed load failed a checksum or a read). It is stopped; a retry starts another.
        case instanceFailed
        /// The worker (another process, another node) running the instance cannot be reached:
        /// it died, or the link to it broke. The instance is dropped; a retry starts another on a
        /// node that answers.
        case workerLost
        /// The node's disk is full.
        case insufficientStorage
        case internalError
    }

    public var kind: Kind
    public var message: String
    /// The request field at fault (OpenAI's `param`).
    public var param: String?

    /// The answer ends its connection (`Connection: close`): set for a request whose
    /// connection was watched for a disconnect, which Hummingbird closes after the response.
    public var closesConnection = false

    public init(_ kind: Kind, _ message: String, param: String? = nil) {
        self.kind = kind
        self.message = message
        self.param = param
    }

    /// A setting the scheduling core refused: a bad request naming the field.
    public init(_ error: SchedulingError) {
        self.init(.invalidRequest, error.message, param: error.field)
    }

    public var description: String { message }

    public var status: HTTPResponse.Status {
        switch kind {
        case .invalidRequest, .contextLengthExceeded: return .badRequest
        case .bodyTooLarge: return .contentTooLarge
        case .unauthorized: return .unauthorized
        case .forbidden: return .forbidden
        case .notFound: return .notFound
        case .conflict: return .conflict
        case .queueFull: return .tooManyRequests
        case .shuttingDown, .unavailable, .insufficientMemory, .instanceFailed, .workerLost: return .serviceUnavailable
        case .insufficientStorage: return .init(code: 507, reasonPhrase: "Insufficient Storage")
        case .internalError: return .internalServerError
        }
    }

    /// The HTTP status code, as a number.
    var statusCode: Int { Int(status.code) }

    /// OpenAI's `error.type`.
    var type: String {
        switch kind {
        case .invalidRequest, .contextLengthExceeded, .bodyTooLarge, .notFound, .conflict:
            return "invalid_request_error"
        case .unauthorized: return "authentication_error"
        case .forbidden: return "permission_error"
        case .queueFull: return "rate_limit_error"
        case .shuttingDown, .unavailable, .insufficientMemory, .instanceFailed, .workerLost:
            return "service_unavailable_error"
        case .insufficientStorage, .internalError: return "server_error"
        }
    }

    /// OpenAI's `error.code`.
    var code: String? {
        switch kind {
        case .contextLengthExceeded: return "context_length_exceeded"
        case .notFound: return param == "model" ? "model_not_found" : "not_found"
        case .unauthorized: return "invalid_api_key"
        case .queueFull: return "rate_limit_exceeded"
        case .bodyTooLarge: return "request_too_large"
        case .shuttingDown: return "shutting_down"
        case .insufficientMemory: return "insufficient_memory"
        case .instanceFailed: return "model_load_failed"
        case .workerLost: return "worker_lost"
        case .insufficientStorage: return "insufficient_storage"
        default: return nil
        }
    }

    /// The OpenAI error object, `{"error": {"message", "type", "param", "code"}}`, written as the
    /// OpenAI API writes all its JSON (``JSONWriter``).
    var json: Data {
        var json = JSONWriter()
        json.object("error") { error in
            error.string("message", message)
            error.string("type", type)
            error.string("param", param)
            error.string("code", code)
        }
        return Data(json.finished.utf8)
    }
}

extension ServingError: HTTPResponseError {
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if kind == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        if closesConnection { headers[.connection] = "close" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: json)))
    }
}

extension ServingError {
    /// Maps any error of the layers below (engine, store, checkpoint, tokenizer, scheduling,
    /// a system call) to the serving layer's kind, as the APIs answer it.
    public init(_ error: any Error) {
        switch error {
        case let error as ServingError:
            self = error
        case let error as EngineError:
            switch error.kind {
            case .contextOverflow: self.init(.contextLengthExceeded, error.description)
            case .invalidInput: self.init(.invalidRequest, error.description)
            case .outOfMemory: self.init(.insufficientMemory, error.description)
            case .unsupportedModel: self.init(.unavailable, error.description)
            case .weightsUnavailable: self.init(.instanceFailed, error.description)
            }
        case let error as SchedulingError:
            self.init(error)
        case let error as StoreError:
            switch error.code {
            case .invalidName, .invalidSource: self.init(.invalidRequest, error.description, param: "model")
            case .notFound: self.init(.notFound, error.description, param: "model")
            case .alreadyExists: self.init(.conflict, error.description)
            case .download, .checksumMismatch: self.init(.unavailable, error.description)
            case .io: self.init(systemFailure: error.description, errno: (error.cause as? Errno)?.rawValue)
            }
        case let error as CheckpointError:
            switch error.code {
            case .notFound: self.init(.notFound, error.description, param: "model")
            case .invalidArgument: self.init(.invalidRequest, error.description)
            case .alreadyExists: self.init(.conflict, error.description)
            case .invalidFormat, .unsupported, .corrupt: self.init(.unavailable, error.description)
            case .io: self.init(systemFailure: error.description, errno: (error.cause as? Errno)?.rawValue)
            }
        case let error as TokenizerError:
            // At request time a tokenizer fails on what the request brought (its messages
            // through the chat template); a model's own tokenizer is checked when it is pulled.
            self.init(.invalidRequest, error.description)
        case let error as Errno:
            self.init(systemFailure: error.description, errno: error.rawValue)
        default:
            self.init(.internalError, "\(error)")
        }
    }

    /// A failed system call: a full disk is 507, missing memory 503, anything else a bug (500).
    private init(systemFailure message: String, errno: Int32?) {
        switch errno {
        case ENOSPC?, EDQUOT?: self.init(.insufficientStorage, message)
        case ENOMEM?: self.init(.insufficientMemory, message)
        case ENOENT?: self.init(.notFound, message)
        default: self.init(.internalError, message)
        }
    }
}
