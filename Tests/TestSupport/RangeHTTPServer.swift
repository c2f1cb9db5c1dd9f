public import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A small HTTP/1.1 file server on 127.0.0.1 (a free port) for download tests: serves byte
/// ranges, can refuse ranges, and can break connections part-way to simulate a flaky remote.
public final class RangeHTTPServer: @unchecked Sendable {
    // Mutable state is guarded by `lock`; NIO handlers read it through the accessors below.
    private let lock = NSLock()
    private var files: [String: [UInt8]] = [:]
    private var _bytesServed = 0
    private var _requests = 0
    private var _dropsLeft = 0
    private var _dropAfter = 0
    private var _rangesSupported = true
    private var _breakThreshold: Int?
    private var _stallThreshold: Int?
    private var _pace: Int?

    private let group: MultiThreadedEventLoopGroup
    private var channel: (any Channel)?
    public private(set) var port = 0

    public init() {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// Serves `bytes` at `/name`.
    public func add(_ name: String, _ bytes: [UInt8]) { lock.withLock { files[name] = bytes } }

    /// The next `count` requests send `afterBytes` body bytes and then close the connection.
    public func breakConnections(count: Int, afterBytes: Int) {
        lock.withLock {
            _dropsLeft = count
            _dropAfter = afterBytes
        }
    }

    /// Once `bytes` body bytes have been served, every later request breaks after 10 bytes
    /// (nil heals the server).
    public func breakConnections(afterTotalBytes bytes: Int?) { lock.withLock { _breakThreshold = bytes } }

    /// Once `bytes` body bytes have been served, later requests get headers and then nothing,
    /// as from a remote that hangs (nil heals the server for new requests).
    public func stall(afterTotalBytes bytes: Int?) { lock.withLock { _stallThreshold = bytes } }

    /// Sends bodies at about `bytesPerSecond` (in 256 KiB pieces), as a remote link would;
    /// nil sends at once.
    public func pace(bytesPerSecond: Int?) { lock.withLock { _pace = bytesPerSecond } }

    public var rangesSupported: Bool {
        get { lock.withLock { _rangesSupported } }
        set { lock.withLock { _rangesSupported = newValue } }
    }

    /// Body bytes sent so far.
    public var bytesServed: Int { lock.withLock { _bytesServed } }
    public var requests: Int { lock.withLock { _requests } }

    public func url(_ name: String) -> URL { URL(string: "http://127.0.0.1:\(port)/\(name)")! }

    public func start() throws {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(server: self))
                }
            }
        let channel = try bootstrap.bind(host: "127.0.0.1", port: 0).wait()
        self.channel = channel
        port = channel.localAddress?.port ?? 0
    }

    public func stop() {
        try? channel?.close().wait()
        try? group.syncShutdownGracefully()
    }

    struct Reply {
        var status: HTTPResponseStatus
        var headers: HTTPHeaders
        var body: [UInt8]
        var dropAfter: Int?
        var stall = false
        var pace: Int?
    }

    func reply(to head: HTTPRequestHead) -> Reply {
        lock.withLock {
            _requests += 1
            let name = String(head.uri.dropFirst())
            guard let data = files[name] else {
                return Reply(status: .notFound, headers: [:], body: Array("not found".utf8))
            }
            var status = HTTPResponseStatus.ok
            var body = data
            var headers: HTTPHeaders = ["ETag": "\"v1\""]
            // A name ending in "/" (or empty: the root) is a page of links, as a package index serves.
            if name.isEmpty || name.hasSuffix("/") || name.hasSuffix(".html") {
                headers.add(name: "Content-Type", value: "text/html")
            }
            if _rangesSupported, let range = head.headers.first(name: "Range"), range.hasPrefix("bytes=") {
                let parts = range.dropFirst(6).split(separator: "-", omittingEmptySubsequences: false)
                if parts.count == 2, let start = Int(parts[0]), start < data.count {
                    let end = min(Int(parts[1]) ?? data.count - 1, data.count - 1)
                    body = Array(data[start...end])
                    status = .partialContent
                    headers.add(name: "Content-Range", value: "bytes \(start)-\(end)/\(data.count)")
                    headers.add(name: "Accept-Ranges", value: "bytes")
                }
            }
            if let threshold = _stallThreshold, _bytesServed >= threshold, status == .partialContent {
                headers.add(name: "Content-Length", value: String(body.count))
                return Reply(status: status, headers: headers, body: [], dropAfter: nil, stall: true)
            }
            var drop: Int?
            if let threshold = _breakThreshold, _bytesServed >= threshold, body.count > 1 {
                drop = min(10, body.count - 1)
            } else if _dropsLeft > 0 && body.count > 1 {
                _dropsLeft -= 1
                drop = min(_dropAfter, body.count - 1)
            }
            _bytesServed += drop ?? body.count
            headers.add(name: "Content-Length", value: String(body.count))
            return Reply(status: status, headers: headers, body: body, dropAfter: drop, pace: _pace)
        }
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let server: RangeHTTPServer
        var head: HTTPRequestHead?

        init(server: RangeHTTPServer) { self.server = server }

        /// Writes `rest` a piece at a time, each after the time the pace allows.
        func send(_ rest: ArraySlice<UInt8>, pace: Int, context: ChannelHandlerContext) {
            guard !rest.isEmpty else {
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            let piece = rest.prefix(256 << 10)
            var buffer = context.channel.allocator.buffer(capacity: piece.count)
            buffer.writeBytes(piece)
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            let delay = TimeAmount.nanoseconds(Int64(piece.count) * 1_000_000_000 / Int64(max(pace, 1)))
            let remaining = rest.dropFirst(piece.count)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: delay) { [self] in
                guard bound.value.channel.isActive else { return }
                send(remaining, pace: pace, context: bound.value)
            }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): self.head = head
            case .body: break
            case .end:
                guard let head else { return }
                let reply = server.reply(to: head)
                context.write(
                    wrapOutboundOut(
                        .head(HTTPResponseHead(version: head.version, status: reply.status, headers: reply.headers))),
                    promise: nil)
                if reply.stall {
                    context.flush()
                    return
                }
                let count = reply.dropAfter ?? reply.body.count
                var buffer = context.channel.allocator.buffer(capacity: count)
                buffer.writeBytes(reply.body[0..<count])
                if reply.dropAfter != nil {
                    context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
                    context.close(promise: nil)
                } else if let pace = reply.pace {
                    send(reply.body[...], pace: pace, context: context)
                } else {
                    context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                }
            }
        }
    }
}
