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
        var environment = ProcessInfo.processInfo.environment
        if withoutKubectl { environment["SLLM_NO_KUBECTL"] = "1" }
        let (status, text) = try runProgram(
            ["python3", Self.root + "/scripts/check-kubernetes.py"], environment: environment)
        #expect(status == 0, "\(text)")
        #expect(text.contains("7 objects") && text.contains(": valid"), "\(text)")
        if withoutKubectl { #expect(text.contains("no kubectl"), "\(text)") }
    }
}
