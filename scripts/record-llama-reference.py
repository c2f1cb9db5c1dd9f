#!/usr/bin/env python3
"""Records llama.cpp's greedy continuation of text prompts on a GGUF file, with each position's
top log-probabilities and the prompt's token ids, in the form the engine's fixture tests read
(the same as scripts/make-random-gguf.py writes for its random-weight models).

  scripts/record-llama-reference.py MODEL.gguf OUT.json --llama-server BIN [--tokens N] [--context N] PROMPT...
"""
import argparse, json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import importlib.util

spec = importlib.util.spec_from_file_location("randomgguf", os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-random-gguf.py"))
randomgguf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(randomgguf)

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("prompts", nargs="+")
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--context", type=int, default=2048)
    # `--no-repack -ub 1`: llama.cpp's per-token vec_dot path, the arithmetic the engine follows.
    ap.add_argument("--server-args", default="--no-repack -ub 1")
    a = ap.parse_args()
    randomgguf.reference(a.model, a.llama_server, a.out, a.prompts, a.tokens, a.top, tokenize=True, context=a.context, extra=a.server_args.split())
