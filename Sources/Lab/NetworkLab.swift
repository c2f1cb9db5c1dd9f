import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Hosts for multi-node tests and benchmarks (`sllm bench scale-out`), each a network namespace with its own address: a veth pair per
/// host joins its `eth0` (10.x.y.N/24) to a bridge, which also carries the test process's own
/// address (10.x.y.254), so the test reaches every host and the hosts reach each other. Links
/// can be shaped (`tc`), cut and healed. Needs root (CAP_NET_ADMIN) and iproute2, which `.ci/run`
/// installs; `unavailable` says why a lab cannot be made here, for a test to skip with.
///
/// Names carry the test process's pid (base 36; interfaces `sl<pid>B`, `sl<pid>V<n>`, `sl<pid>P<n>`), so labs of crashed runs are swept away by the next one.
public final class NetworkLab: @unchecked Sendable {
    // Sendable: the host table is written during `init` only.
    public struct Host: Sendable {
        public let name: String
        public let namespace: String
        public let address: String
        /// The bridge side of the host's veth pair (in the test's namespace).
        let link: String
    }

    public let prefix: String
    public let gateway: String
    public private(set) var hosts: [String: Host] = [:]
    private let id: String
    private let bridge: String
    private var removed = false

    /// Why no lab can be made here, nil when one can (root, `ip` and network namespaces work).
    public static let unavailable: String? = {
        guard getuid() == 0 else { return "network namespaces need root (CAP_NET_ADMIN)" }
        guard FileManager.default.isExecutableFile(atPath: ip) else {
            return "iproute2's `ip` is not installed (.ci/run installs it)"
        }
        let probe = "sllm-probe-\(getpid())"
        let made = run([ip, "netns", "add", probe])
        _ = run([ip, "netns", "del", probe])
        return made.status == 0 ? nil : "cannot create a network namespace: \(made.output)"
    }()

    public static let ip =
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        } ?? "/usr/sbin/ip"
    static let tc =
        ["/usr/sbin/tc", "/sbin/tc", "/usr/bin/tc"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        } ?? "/usr/sbin/tc"

    /// Makes hosts named `names` (addresses .1, .2, … in order).
    public init(hosts names: [String]) throws {
        if let reason = Self.unavailable { throw NetworkLabError(reason) }
        Self.sweep()
        id = String(getpid(), radix: 36)
        let pid = Int(getpid())
        prefix = "10.\(200 + pid % 50).\((pid / 50) % 250)"
        gateway = prefix + ".254"
        bridge = "sl\(id)B"
        do {
            try Self.must([Self.ip, "link", "add", bridge, "type", "bridge"])
            try Self.must([Self.ip, "addr", "add", gateway + "/24", "dev", bridge])
            try Self.must([Self.ip, "link", "set", bridge, "up"])
            for (index, name) in names.enumerated() {
                let namespace = "sllm-lab-\(id)-\(name)"
                let link = "sl\(id)V\(index)"
                let peer = "sl\(id)P\(index)"
                let address = "\(prefix).\(index + 1)"
                try Self.must([Self.ip, "netns", "add", namespace])
                try Self.must([Self.ip, "link", "add", link, "type", "veth", "peer", "name", peer])
                try Self.must([Self.ip, "link", "set", peer, "netns", namespace])
                try Self.must([Self.ip, "-n", namespace, "link", "set", peer, "name", "eth0"])
                try Self.must([Self.ip, "-n", namespace, "addr", "add", address + "/24", "dev", "eth0"])
                try Self.must([Self.ip, "-n", namespace, "link", "set", "eth0", "up"])
                try Self.must([Self.ip, "-n", namespace, "link", "set", "lo", "up"])
                try Self.must([Self.ip, "link", "set", link, "master", bridge])
                try Self.must([Self.ip, "link", "set", link, "up"])
                hosts[name] = Host(name: name, namespace: namespace, address: address, link: link)
            }
        } catch {
            remove()
            throw error
        }
    }

    deinit { remove() }

    public func host(_ name: String) -> Host { hosts[name]! }

    /// The command line that runs `arguments` on `host`.
    public func command(on host: String, _ arguments: [String]) -> [String] {
        [Self.ip, "netns", "exec", self.host(host).namespace] + arguments
    }

    /// Shapes `host`'s link both ways to `rate` (tc's units: `1gbit`, `1600mbit`), with an
    /// optional one-way `delay` (`1ms`).
    public func shape(_ host: String, rate: String, delay: String? = nil) throws {
        let target = self.host(host)
        for (namespace, device) in [(nil, target.link), (target.namespace, "eth0")] as [(String?, String)] {
            let prefix = namespace.map { [Self.ip, "netns", "exec", $0, Self.tc] } ?? [Self.tc]
            _ = Self.run(prefix + ["qdisc", "del", "dev", device, "root"])
            if let delay {
                try Self.must(
                    prefix + ["qdisc", "add", "dev", device, "root", "handle", "1:", "netem", "delay", delay])
                try Self.must(
                    prefix + [
                        "qdisc", "add", "dev", device, "parent", "1:1", "handle", "10:", "tbf", "rate", rate, "burst",
                        "1mb", "latency", "100ms",
                    ])
            } else {
                try Self.must(
                    prefix + [
                        "qdisc", "add", "dev", device, "root", "tbf", "rate", rate, "burst", "1mb", "latency", "100ms",
                    ])
            }
        }
    }

    /// Cuts `host`'s link (its processes run on, unreachable), or heals it.
    public func cut(_ host: String) throws { try Self.must([Self.ip, "link", "set", self.host(host).link, "down"]) }
    public func heal(_ host: String) throws { try Self.must([Self.ip, "link", "set", self.host(host).link, "up"]) }

    /// Deletes the hosts and the bridge (processes still in a namespace lose their network).
    public func remove() {
        guard !removed else { return }
        removed = true
        for host in hosts.values {
            _ = Self.run([Self.ip, "link", "del", host.link])
            _ = Self.run([Self.ip, "netns", "del", host.namespace])
        }
        _ = Self.run([Self.ip, "link", "del", bridge])
    }

    /// Removes labs whose test process is gone.
    static func sweep() {
        func dead(_ id: Substring) -> Bool {
            guard let pid = Int32(id, radix: 36) else { return false }
            return pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH
        }
        for line in run([ip, "netns", "list"]).output.split(separator: "\n") {
            let name = line.split(separator: " ").first ?? ""
            let parts = name.split(separator: "-")
            if parts.count >= 4, parts[0] == "sllm", parts[1] == "lab", dead(parts[2]) {
                _ = run([ip, "netns", "del", String(name)])
            }
        }
        for line in run([ip, "-o", "link", "show"]).output.split(separator: "\n") {
            let fields = line.split(separator: ":")
            guard fields.count > 1 else { continue }
            let name = fields[1].trimmingCharacters(in: .whitespaces).split(separator: "@").first ?? ""
            guard name.hasPrefix("sl"), let kind = name.dropFirst(2).firstIndex(where: { "BVP".contains($0) }) else {
                continue
            }
            let id = name[name.index(name.startIndex, offsetBy: 2)..<kind]
            if !id.isEmpty, dead(id) { _ = run([ip, "link", "del", String(name)]) }
        }
    }

    @discardableResult
    static func run(_ arguments: [String]) -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do { try process.run() } catch { return (-1, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func must(_ arguments: [String]) throws {
        let result = run(arguments)
        guard result.status == 0 else {
            throw NetworkLabError("`\(arguments.joined(separator: " "))` failed: \(result.output)")
        }
    }
}

public struct NetworkLabError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
