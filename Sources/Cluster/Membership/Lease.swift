public import Foundation
import NIOCore
public import Serving

/// Workers join a controller and stay members by renewing a lease: `POST /cluster/v1/lease`
/// with a ``LeaseRequest`` (behind the cluster token), answered with a ``LeaseGrant`` saying how
/// long the lease lasts and how often to renew it. A worker that stops renewing is lost once
/// its lease runs out; `POST /cluster/v1/leave` ends a lease at once (a worker shutting down).
public enum LeaseWire {
    public static let leasePath = "/cluster/v1/lease"
    public static let leavePath = "/cluster/v1/leave"
    /// How long a leaving worker waits for the controller to move its running requests away
    /// (within Kubernetes' default termination grace period of 30 s).
    static let drainTimeout = TimeAmount.seconds(25)
    /// The largest lease body a controller reads (an inventory lists every model a node holds).
    public static let maxBodyBytes = 4 << 20
}

/// A worker's renewal: who it is, where its worker protocol answers, which run of its process
/// this is, and its inventory now.
public struct LeaseRequest: Codable, Sendable, Equatable {
    public var node: NodeID
    /// The worker protocol's base URL, `http://HOST:PORT`.
    public var url: String
    /// This run of the worker process (new at each start): a new one means the node restarted
    /// and none of its old instances survive.
    public var boot: String
    public var inventory: NodeInventory

    public init(node: NodeID, url: String, boot: String, inventory: NodeInventory) {
        self.node = node
        self.url = url
        self.boot = boot
        self.inventory = inventory
    }

    /// The URL, checked as a base URL (`http` or `https`, a host, no path, query or user).
    public static func checkedURL(_ text: String) -> URL? {
        guard text.utf8.count <= 2048, let url = URL(string: text), url.scheme == "http" || url.scheme == "https",
            let host = url.host, !host.isEmpty, url.path.isEmpty || url.path == "/", url.query == nil,
            url.fragment == nil, url.user == nil
        else { return nil }
        return URL(string: text.hasSuffix("/") ? String(text.dropLast()) : text)
    }

    /// Why the request cannot be a member's, nil when it can.
    func problem() -> String? {
        if node.rawValue.isEmpty || node.rawValue.utf8.count > 128
            || node.rawValue.unicodeScalars.contains(where: { !($0.isASCII && $0.value > 32 && $0.value < 127) })
        {
            return "a node name is 1 to 128 printable ASCII characters without spaces"
        }
        if inventory.node != node { return "the inventory is of node \(inventory.node), not \(node)" }
        if Self.checkedURL(url) == nil { return "`url` must be the worker's http://HOST:PORT" }
        if boot.isEmpty || boot.utf8.count > 128 { return "`boot` must be 1 to 128 bytes" }
        return nil
    }
}

/// A worker leaving (shutting down): its lease ends now.
public struct LeaveRequest: Codable, Sendable, Equatable {
    public var node: NodeID
    public var boot: String

    public init(node: NodeID, boot: String) {
        self.node = node
        self.boot = boot
    }
}

/// The controller's answer to a renewal: a lease, or (from a controller that does not lead)
/// where the leader is.
public struct LeaseGrant: Codable, Sendable, Equatable {
    /// Seconds after this renewal at which the worker is lost unless it renews again (0: not granted).
    public var leaseSeconds: Double
    /// Seconds until the worker should renew.
    public var renewSeconds: Double
    /// The leading controller's URL, when this one does not lead (nil while none is known).
    public var leader: String?

    public init(leaseSeconds: Double, renewSeconds: Double, leader: String? = nil) {
        self.leaseSeconds = leaseSeconds
        self.renewSeconds = renewSeconds
        self.leader = leader
    }

    public var granted: Bool { leaseSeconds > 0 }
}
