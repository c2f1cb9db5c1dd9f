#!/usr/bin/env bash
# Builds llama.cpp (llama-bench, llama-server, llama-completion) from the source inside the
# llama-cpp-python sdist, for the benchmarks that compare against it. Nothing of it is committed.
# Usage: scripts/build-llama-cpp.sh [DIR]   (default ~/.cache/sllm-bench/llama.cpp); prints the bin dir.
set -euo pipefail
dir="${1:-$HOME/.cache/sllm-bench/llama.cpp}"
version=0.3.36
mkdir -p "$dir"
if ! command -v cmake >/dev/null; then
    # A fresh machine has no package lists yet: update them first, as install-bench-tools.sh does.
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cmake g++ make >&2
fi
if [ ! -d "$dir/src" ]; then
    tmp="$(mktemp -d)"
    python3 -m pip download --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$tmp" >&2
    tar xzf "$tmp"/llama_cpp_python-$version.tar.gz -C "$tmp"
    rm -rf "$dir/src"
    mv "$tmp/llama_cpp_python-$version/vendor/llama.cpp" "$dir/src"
    rm -rf "$tmp"
fi
cmake -S "$dir/src" -B "$dir/build" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >&2
cmake --build "$dir/build" -j"$(nproc)" --target llama-bench llama-server llama-completion llama-quantize >&2
echo "$dir/build/bin"
