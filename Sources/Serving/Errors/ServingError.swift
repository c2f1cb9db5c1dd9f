public import Hummingbird
import Engine
public import Scheduling
import Foundation
import NIOCore

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
        case .shuttingDown, .unavailable, .insufficientMemory: return .serviceUnavailable
        case .internalError: return .internalServerError
        }
    }

    /// OpenAI's `error.type`.
    var type: String {
        switch kind {
        case .invalidRequest, .contextLengthExceeded, .bodyTooLarge, .notFound, .conflict: return "invalid_request_error"
        case .unauthorized: return "authentication_error"
        case .forbidden: return "permission_error"
        case .queueFull: return "rate_limit_error"
        case .shuttingDown, .unavailable, .insufficientMemory: return "service_unavailable_error"
        case .internalError: return "server_error"
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
        default: return nil
        }
    }

    /// The OpenAI error object: `{"error": {"message", "type", "param", "code"}}`.
    var body: [String: Any] {
        ["error": ["message": message, "type": type, "param": param ?? NSNull(), "code": code ?? NSNull()] as [String: Any]]
    }

    var json: Data { (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data() }
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
    /// Maps an engine error to the wire.
    init(_ error: any Error) {
        if let error = error as? ServingError {
            self = error
        } else if let error = error as? EngineError {
            switch error.kind {
            case .contextOverflow: self.init(.contextLengthExceeded, error.description)
            case .invalidInput: self.init(.invalidRequest, error.description)
            case .outOfMemory: self.init(.insufficientMemory, error.description)
            case .unsupportedModel: self.init(.unavailable, error.description)
            }
        } else {
            self.init(.internalError, "\(error)")
        }
    }
}
