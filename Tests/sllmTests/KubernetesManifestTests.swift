import Foundation
import TestSupport
import Testing

/// `deploy/kubernetes` renders and every object is valid against the Kubernetes API schemas,
/// offline and strictly (`scripts/check-kubernetes.py`), with `kubectl kustomize` where kubectl
/// is installed and with the script's own rendering of the kustomization either way.
@Suite struct KubernetesManifestTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    @Test(arguments: [false, true]) func theManifestsAreValid(withoutKubectl: Bool) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.root + "/scripts/check-kubernetes.py"]
        var environment = ProcessInfo.processInfo.environment
        if withoutKubectl { environment["SLLM_NO_KUBECTL"] = "1" }
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(text)")
        #expect(text.contains("7 objects") && text.contains(": valid"), "\(text)")
        if withoutKubectl { #expect(text.contains("no kubectl"), "\(text)") }
    }
}
