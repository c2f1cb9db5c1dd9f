import Foundation

/// A request path's components as a server that decodes percent-escapes and resolves `.` and
/// `..` would see them, lower-cased (one that does neither sees no more routes than this): what
/// the HTTP fuzzers check a 2xx against.
public func resolvedPathComponents(_ path: Substring) -> [String] {
    let decoded = String(path).removingPercentEncoding ?? String(path)
    var components: [String] = []
    for piece in decoded.split(separator: "/") {
        switch piece {
        case ".": continue
        case "..": _ = components.popLast()
        default: components.append(piece.lowercased())
        }
    }
    return components
}

/// The admin routes any valid key may read (the console's state, its event stream, the
/// simulator runs it plots).
public let userReadableAdminRoutes: Set<[String]> = [
    ["admin", "console"], ["admin", "events"], ["admin", "experiments"],
]
