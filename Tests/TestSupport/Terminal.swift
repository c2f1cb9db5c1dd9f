public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `sllm ARGUMENTS` run on a pseudo-terminal, as a user at a terminal runs it: its stdin, stdout
/// and stderr are the terminal, so `isatty` is true and it behaves interactively. The test
/// types lines and reads what the terminal shows.
public final class TerminalProcess: @unchecked Sendable {
    // Sendable: what the terminal shows is written by the reading thread under the screen's lock.
    public let process: Process
    private let master: Int32
    private let screen = Screen()

    /// What the terminal showed; the reading thread holds this, not the process object, so a
    /// test that stops early still kills the process when it lets go of it.
    private final class Screen: @unchecked Sendable {
        let lock = NSLock()
        var text = ""
    }

    public init(_ arguments: [String], home: String) throws {
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        var name = [CChar](repeating: 0, count: 128)
        guard master >= 0, Self.call("grantpt", master) == 0, Self.call("unlockpt", master) == 0,
            Self.ptsname(master, &name) == 0
        else {
            throw TestSupportError("no pseudo-terminal: errno \(errno)")
        }
        let slave = open(name, O_RDWR | O_NOCTTY)
        guard slave >= 0 else {
            close(master)
            throw TestSupportError(
                "cannot open \(String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)): errno \(errno)"
            )
        }
        self.master = master
        process = Process()
        process.executableURL = sllmExecutable()
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["SLLM_HOME"] = home
        environment["TERM"] = "dumb"
        process.environment = environment
        let terminal = FileHandle(fileDescriptor: slave, closeOnDealloc: true)
        process.standardInput = terminal
        process.standardOutput = terminal
        process.standardError = terminal
        do { try process.run() } catch {
            close(master)
            throw error
        }
        // The child has its own copies; ours would keep the terminal open after it exits.
        try terminal.close()
        let screen = self.screen
        Thread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = read(master, &buffer, buffer.count)
                if count <= 0 { break }
                screen.lock.lock()
                screen.text += String(decoding: buffer[0..<count], as: UTF8.self)
                screen.lock.unlock()
            }
            // Every copy of the terminal's other side is closed (the process exited): done.
            close(master)
        }.start()
    }

    // Glibc's Swift module hides the XSI pseudo-terminal calls; they are looked up by name.
    private static func call(_ symbol: String, _ fd: Int32) -> Int32 {
        guard let address = dlsym(UnsafeMutableRawPointer(bitPattern: 0), symbol) else { return -1 }
        return unsafeBitCast(address, to: (@convention(c) (Int32) -> Int32).self)(fd)
    }

    private static func ptsname(_ fd: Int32, _ name: inout [CChar]) -> Int32 {
        guard let address = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "ptsname_r") else { return -1 }
        let function = unsafeBitCast(
            address, to: (@convention(c) (Int32, UnsafeMutablePointer<CChar>, Int) -> Int32).self)
        let count = name.count
        return name.withUnsafeMutableBufferPointer { function(fd, $0.baseAddress!, count) }
    }

    /// Everything the terminal showed so far (the terminal echoes typed lines, and ends lines
    /// with "\r\n").
    public var output: String {
        screen.lock.lock()
        defer { screen.lock.unlock() }
        return screen.text
    }

    /// Types `line` and Enter.
    public func type(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(master, $0.baseAddress, $0.count) }
    }

    /// Sends SIGINT, as Ctrl-C does to the terminal's foreground process.
    public func interrupt() {
        kill(process.processIdentifier, SIGINT)
    }

    /// Waits (on this thread) until `condition` holds for what the terminal shows; false after
    /// `timeout` seconds, or when the process exited without it.
    public func waitFor(timeout: Double = 60, _ condition: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition(output) { return true }
            if !process.isRunning {
                usleep(100_000)
                return condition(output)
            }
            usleep(10_000)
        }
        return false
    }

    /// Waits for the exit (killing it after `timeout` seconds); returns the exit status, nil if
    /// it had to be killed.
    public func waitForExit(timeout: Double = 30) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    /// Kills a process still running; the reading thread then sees the terminal close and
    /// closes its side.
    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}
