public import AsyncHTTPClient
public import Foundation
import NIOHTTP1

/// A place a checkpoint missing from the local store can be fetched from: a remote store (any
/// HTTP server with range support over a data directory's `models/`), or another node of the
/// cluster that holds the checkpoint (or is fetching it, and forwards what it has verified).
///
/// The checkpoint's files are at `base/NAME/FILE` (`base/NAME/index` first).
public struct CheckpointSource: Sendable, CustomStringConvertible {
    public var base: URL
    /// How logs and fetch reports name it: a node's name, or the remote store's URL.
    public var label: String
    /// A node of the cluster (the load's tier is then `.peer`), not a remote store.
    public var isPeer: Bool
    /// Sent with every request (a peer's `Authorization: Bearer <cluster token>`).
    public var headers: [(name: String, value: String)]
    /// The client requests go through (a peer's trusts the cluster's CA); nil: the shared one.
    public var client: HTTPClient?
    /// A peer that is fetching the checkpoint itself and may not have begun: asked to wait for
    /// its fetch to begin (``awaitFetchHeader``) rather than answer 404.
    public var relays: Bool

    /// The header asking a peer to wait (up to its value, in seconds) for a fetch of the
    /// checkpoint to begin before it answers that it has none.
    public static let awaitFetchHeader = "sllm-await-fetch"

    public init(
        base: URL, label: String? = nil, isPeer: Bool = false, headers: [(name: String, value: String)] = [],
        client: HTTPClient? = nil, relays: Bool = false
    ) {
        self.relays = relays
        self.base = base
        self.label = label ?? base.absoluteString
        self.isPeer = isPeer
        self.headers = headers
        self.client = client
    }

    public var description: String { label }

    func url(_ model: ModelName, _ file: String) -> URL {
        base.appendingPathComponent(model.rawValue).appendingPathComponent(file)
    }

    func request(_ url: URL) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url.absoluteString)
        for header in headers { request.headers.add(name: header.name, value: header.value) }
        return request
    }
}

/// Where one fetch takes a checkpoint from: `sources` in order of preference, of which the
/// first `spread` share the chunks (ranges go to them in turn); the rest, and then the loader's
/// remote stores, take over the chunks a failing source could not deliver.
public struct FetchPlan: Sendable {
    public var sources: [CheckpointSource]
    public var spread: Int

    public init(sources: [CheckpointSource] = [], spread: Int = 1) {
        self.sources = sources
        self.spread = max(1, min(spread, max(1, sources.count)))
    }
}
