#!/usr/bin/env python3
"""Renders deploy/kubernetes (its kustomization) and validates every object offline against the
Kubernetes API schemas (the `kubernetes-validate` package from PyPI, installed into a cached
virtual environment on first use), strictly: unknown fields are errors.

    scripts/check-kubernetes.py [--version 1.32] [--print]

Rendering uses `kubectl kustomize` when kubectl is on PATH, else the subset of kustomize the
kustomization uses (resources, namespace, labels; also with SLLM_NO_KUBECTL=1), so that a machine
without kubectl checks the same objects. A deliberately broken copy of the first Deployment must be rejected, or the check
itself is broken. Exit status 0 when everything is valid.
"""
import argparse, copy, fcntl, os, shutil, subprocess, sys, venv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KUSTOMIZATION = os.path.join(ROOT, "deploy", "kubernetes")
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "sllm-test", "kubernetes-validate-venv")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


def ensure_validator():
    python = os.path.join(CACHE, "bin", "python")
    os.makedirs(os.path.dirname(CACHE), exist_ok=True)
    # Checks running at once (the test suite runs two) build the environment once: the others
    # wait for the lock, then find it whole.
    with open(CACHE + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run([python, "-c", "import kubernetes_validate, yaml"], capture_output=True).returncode if os.path.exists(python) else 1:
            shutil.rmtree(CACHE, ignore_errors=True)
            venv.EnvBuilder(with_pip=True).create(CACHE)
            subprocess.check_call([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                   "kubernetes-validate==1.37.0", "PyYAML"])
    return python


def render_with_kubectl():
    kubectl = shutil.which("kubectl")
    if not kubectl or os.environ.get("SLLM_NO_KUBECTL"):
        return None
    result = subprocess.run([kubectl, "kustomize", KUSTOMIZATION], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"kubectl kustomize failed:\n{result.stderr}")
    return result.stdout


def render_subset(yaml):
    """The kustomization's resources with its namespace and labels applied."""
    with open(os.path.join(KUSTOMIZATION, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    known = {"apiVersion", "kind", "namespace", "labels", "resources"}
    unknown = set(kustomization) - known
    if unknown:
        sys.exit(f"kustomization.yaml uses {sorted(unknown)}: render it with kubectl kustomize")
    labels = {}
    for entry in kustomization.get("labels", []):
        labels.update(entry.get("pairs", {}))
    objects = []
    for resource in kustomization["resources"]:
        with open(os.path.join(KUSTOMIZATION, resource)) as f:
            for document in yaml.safe_load_all(f):
                if not document:
                    continue
                metadata = document.setdefault("metadata", {})
                if document["kind"] not in CLUSTER_SCOPED and "namespace" in kustomization:
                    metadata["namespace"] = kustomization["namespace"]
                metadata.setdefault("labels", {}).update(labels)
                objects.append(document)
    return yaml.safe_dump_all(objects, sort_keys=False)


VALIDATE = r'''
import copy, sys, yaml, kubernetes_validate as kv
version = sys.argv[1]
documents = [d for d in yaml.safe_load_all(sys.stdin.read()) if d]
failures = 0
kinds = []
for document in documents:
    kinds.append(document["kind"])
    try:
        kv.validate(document, version, strict=True)
    except kv.ValidationError as error:
        failures += 1
        print(f"{document['kind']} {document['metadata'].get('name')}: {error.message}")
# The check must be able to fail: a Deployment with a misspelt field is rejected.
broken = copy.deepcopy(next(d for d in documents if d["kind"] == "Deployment"))
broken["spec"]["replicaz"] = broken["spec"].pop("replicas")
try:
    kv.validate(broken, version, strict=True)
    print("the validator accepted a Deployment with an unknown field: the check is broken")
    failures += 1
except kv.ValidationError:
    pass
expected = {"Namespace", "Service", "StatefulSet", "Deployment", "PodDisruptionBudget", "DaemonSet"}
if not expected.issubset(kinds):
    print(f"missing kinds: {sorted(expected - set(kinds))}")
    failures += 1
print(f"{len(documents)} objects ({', '.join(sorted(set(kinds)))}) checked against Kubernetes {version}: "
      + ("valid" if failures == 0 else f"{failures} problem(s)"))
sys.exit(1 if failures else 0)
'''


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="1.32")
    parser.add_argument("--print", action="store_true", help="print the rendered objects")
    arguments = parser.parse_args()
    python = ensure_validator()
    rendered = render_with_kubectl()
    how = "kubectl kustomize"
    if rendered is None:
        sys.path.insert(0, subprocess.check_output(
            [python, "-c", "import yaml, os; print(os.path.dirname(os.path.dirname(yaml.__file__)))"], text=True).strip())
        import yaml
        rendered = render_subset(yaml)
        how = "the kustomization's resources, namespace and labels (no kubectl)"
    if arguments.print:
        print(rendered)
    print(f"rendered with {how}")
    result = subprocess.run([python, "-c", VALIDATE, arguments.version], input=rendered, text=True)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
