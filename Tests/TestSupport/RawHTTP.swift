import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A plain TCP client for requests no HTTP library sends as written: absolute-form targets,
/// doubled slashes, dot segments, half-sent requests, slow clients.
public final class RawConnection {
    public let descriptor: Int32

    /// Connects to `host` (IPv4; default 127.0.0.1):`port`; reads give up after `timeout` seconds.
    public init(host: String = "127.0.0.1", port: Int, timeout: Double = 10) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw TestSupportError("socket failed") }
        var address = loopbackAddress(port: port)
        address.sin_addr.s_addr = inet_addr(host)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        // `deinit` closes the socket, also when this throws (the instance is whole by then): closing
        // it here too would close a descriptor number another thread may have opened meanwhile
        // (Foundation's process monitor took that for a child's exit and blocked on it for good).
        guard connected == 0 else { throw TestSupportError("cannot connect to \(host):\(port)") }
        var interval = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { if descriptor >= 0 { close(descriptor) } }

    /// Sends bytes; false when the server has closed the connection.
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard sent > 0 else { return false }
            offset += sent
        }
        return true
    }

    @discardableResult
    public func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    /// Reads until the server closes the connection, the timeout passes, or `until` holds for
    /// what was read so far.
    public func receive(until: (([UInt8]) -> Bool)? = nil) -> [UInt8] {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { break }
            received += buffer[0..<count]
            if let until, until(received) { break }
        }
        return received
    }

    /// Whether the server closed the connection: a read returns end-of-file (not a time-out).
    public func isClosedByPeer() -> Bool {
        var byte: UInt8 = 0
        let count = recv(descriptor, &byte, 1, 0)
        return count == 0 || (count < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }
}

/// One HTTP/1.1 response parsed from raw bytes.
public struct RawResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: String
    /// The body's bytes as sent, for a response with a Content-Length (binary bodies; `body`
    /// decodes them as UTF-8); empty otherwise.
    public var bodyBytes: [UInt8] = []

    public func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }

    /// The status line and headers of `text`, with whatever follows the head as the body (not
    /// decoded); nil without a whole head and a status.
    public static func parseHead(_ text: String) -> RawResponse? {
        guard let end = text.range(of: "\r\n\r\n") else { return nil }
        let lines = text[..<end.lowerBound].components(separatedBy: "\r\n")
        let parts = lines.first?.split(separator: " ") ?? []
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        var headers: [(String, String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append(
                (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        return RawResponse(status: status, headers: headers, body: String(text[end.upperBound...]))
    }

    /// Parses the first response in `bytes` (Content-Length or chunked); nil when incomplete.
    public static func parse(_ bytes: [UInt8]) -> RawResponse? {
        guard var response = parseHead(String(decoding: bytes, as: UTF8.self)) else { return nil }
        if let length = response.header("content-length").flatMap(Int.init) {
            let headEnd = (0..<max(0, bytes.count - 3)).first {
                bytes[$0] == 13 && bytes[$0 + 1] == 10 && bytes[$0 + 2] == 13 && bytes[$0 + 3] == 10
            }
            guard let headEnd, bytes.count - (headEnd + 4) >= length else { return nil }
            response.bodyBytes = Array(bytes[(headEnd + 4)..<(headEnd + 4 + length)])
            response.body = String(decoding: Array(response.body.utf8)[0..<length], as: UTF8.self)
        } else if response.header("transfer-encoding")?.lowercased() == "chunked" {
            guard response.body.hasSuffix("0\r\n\r\n") else { return nil }
            var decoded = ""
            var rest = Substring(response.body)
            while let lineEnd = rest.range(of: "\r\n"), let size = Int(rest[..<lineEnd.lowerBound], radix: 16), size > 0
            {
                let start = lineEnd.upperBound
                let bytes = Array(rest[start...].utf8)
                decoded += String(decoding: bytes.prefix(size), as: UTF8.self)
                rest = Substring(String(decoding: bytes.dropFirst(size + 2), as: UTF8.self))
            }
            response.body = decoded
        }
        return response
    }
}

/// Sends one raw request (the text as given, `Connection: close` is the caller's to add) and
/// reads its response, on a thread of its own: blocking reads on the cooperative pool would
/// starve the in-process server that is to answer them.
public func rawRequest(port: Int, _ request: String, timeout: Double = 10) async throws -> RawResponse {
    try await onThread { try rawRequestBlocking(port: port, request, timeout: timeout) }
}

/// Sends one raw request and reads only its status line and headers (a stream such as server-sent
/// events never ends by itself); the body is whatever came with them.
public func rawRequestHead(port: Int, _ request: String, timeout: Double = 10) async throws -> RawResponse {
    try await onThread {
        let connection = try RawConnection(port: port, timeout: timeout)
        connection.send(request)
        let bytes = connection.receive { String(decoding: $0, as: UTF8.self).contains("\r\n\r\n") }
        let text = String(decoding: bytes, as: UTF8.self)
        guard text.contains("\r\n\r\n") else {
            throw TestSupportError(
                "no response head to \(request.prefix(80).debugDescription) (got \(bytes.count) bytes)")
        }
        guard let response = RawResponse.parseHead(text) else {
            throw TestSupportError("no status line in \(text.prefix(80).debugDescription)")
        }
        return response
    }
}

/// Runs blocking work on a new thread and returns its result.
public func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try work() }) }
        thread.start()
    }
}

public func rawRequestBlocking(port: Int, _ request: String, timeout: Double = 10) throws -> RawResponse {
    let connection = try RawConnection(port: port, timeout: timeout)
    connection.send(request)
    let bytes = connection.receive { RawResponse.parse($0) != nil }
    guard let response = RawResponse.parse(bytes) else {
        throw TestSupportError(
            "no complete response to \(request.prefix(80).debugDescription) (got \(bytes.count) bytes)")
    }
    return response
}

/// 127.0.0.1:`port`.
func loopbackAddress(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    return address
}

/// A TCP port on 127.0.0.1 nothing listens on now.
public func freeTCPPort() -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(descriptor) }
    var address = loopbackAddress(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether a listener could bind 127.0.0.1:`port` now (as a server does, with SO_REUSEADDR).
public func canBind(port: Int) -> Bool {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(descriptor) }
    var one: Int32 = 1
    setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = loopbackAddress(port: port)
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    return result == 0 && listen(descriptor, 1) == 0
}

/// Flips one bit of the first byte of every slab of a DRAM cache (the first tensor of each
/// segment): what a bit flip in shared memory does.
public func flipFirstByteOfEverySlab(cacheDirectory: String) throws {
    let slabs = try FileManager.default.contentsOfDirectory(atPath: cacheDirectory + "/slabs").filter {
        !$0.hasPrefix(".")
    }
    guard !slabs.isEmpty else { throw TestSupportError("no slabs in \(cacheDirectory)") }
    for slab in slabs {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: cacheDirectory + "/slabs/" + slab))
        let byte = try handle.read(upToCount: 1) ?? Data([0])
        try handle.seek(toOffset: 0)
        try handle.write(contentsOf: Data([byte[0] ^ 0x01]))
        try handle.close()
    }
}
