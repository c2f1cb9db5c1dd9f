import Checkpoint
import Foundation
import Store
import Synchronization

/// Shows progress of long work on stderr: a redrawn bar on a terminal, a plain line every 10%
/// otherwise (logs and CI), nothing when disabled.
final class ProgressBar: Sendable {
    private struct State {
        var phase = ""
        var lastDecile = -1
        var lastDraw = 0.0
        var start = 0.0
        var drawn = false
    }

    private let enabled: Bool
    private let terminal: Bool
    private let state = Mutex(State())

    init(enabled: Bool) {
        self.enabled = enabled
        self.terminal = isatty(2) != 0 && isatty(1) != 0
    }

    /// The handler to pass to library calls.
    var handler: ProgressHandler? {
        guard enabled else { return nil }
        return { [self] progress in self.update(progress) }
    }

    func update(_ progress: Checkpoint.Progress) {
        let now = Date().timeIntervalSince1970
        state.withLock { state in
            if progress.phase != state.phase {
                if state.drawn && terminal { FileHandle.standardError.write(Data("\n".utf8)) }
                state = State(phase: progress.phase, start: now)
            }
            let fraction = progress.totalBytes > 0 ? Double(progress.completedBytes) / Double(progress.totalBytes) : 0
            let elapsed = max(now - state.start, 1e-6)
            let rate = elapsed > 0.25 ? Double(progress.completedBytes) / elapsed : 0
            let finished = progress.totalBytes > 0 && progress.completedBytes >= progress.totalBytes
            var amount = formatBytes(progress.completedBytes)
            if progress.totalBytes > 0 { amount += " / " + formatBytes(progress.totalBytes) }
            if terminal {
                guard finished || now - state.lastDraw >= 0.1 else { return }
                state.lastDraw = now
                let width = 30
                let filled = Int(fraction * Double(width))
                let bar =
                    progress.totalBytes > 0
                    ? "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
                        + String(format: "%3.0f%% ", fraction * 100)
                    : ""
                var eta = ""
                if progress.totalBytes > 0, rate > 0, !finished {
                    eta = String(format: " ETA %.0fs", Double(progress.totalBytes - progress.completedBytes) / rate)
                }
                let speed = rate > 0 ? " \(formatBytes(Int64(rate)))/s" : ""
                let line = "\r\(progress.phase) \(bar)\(amount)\(speed)\(eta)\u{1B}[K"
                FileHandle.standardError.write(Data(line.utf8))
                state.drawn = true
                if finished {
                    FileHandle.standardError.write(Data("\n".utf8))
                    state.drawn = false
                }
            } else {
                // Tenths of a known total; without one (pip), a line every 16 MiB.
                let decile = progress.totalBytes > 0 ? Int(fraction * 10) : Int(progress.completedBytes >> 24)
                guard decile > state.lastDecile || !state.drawn else { return }
                state.lastDecile = decile
                state.drawn = true
                let percent = progress.totalBytes > 0 ? "\(decile * 10)% " : ""
                let speed = rate > 0 ? " \(formatBytes(Int64(rate)))/s" : ""
                FileHandle.standardError.write(Data("\(progress.phase): \(percent)\(amount)\(speed)\n".utf8))
            }
        }
    }

    /// Ends a bar that was left open.
    func finish() {
        state.withLock { state in
            if state.drawn && terminal { FileHandle.standardError.write(Data("\n".utf8)) }
            state.drawn = false
        }
    }
}
