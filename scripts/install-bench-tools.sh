#!/usr/bin/env bash
# Installs the peers the benchmarks compare against: fio and hyperfine (Debian packages),
# safetensors and numpy (PyPI).
set -euo pipefail
missing=()
command -v fio >/dev/null || missing+=(fio)
command -v hyperfine >/dev/null || missing+=(hyperfine)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
python3 -c "import safetensors.numpy, numpy" 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check safetensors numpy
fio --version
