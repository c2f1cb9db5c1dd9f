#!/usr/bin/env python3
"""Writes a small random-weight GGUF of an architecture (the `gguf` package, as llama.cpp's own
converter writes them), and optionally records llama.cpp's greedy continuation of a prompt on it
with each position's top log-probabilities, for an engine test to compare against.

  scripts/make-random-gguf.py qwen3 OUT.gguf [--seed N] [--reference OUT.json --llama-server BIN]
  scripts/make-random-gguf.py llama OUT.gguf --hidden 256 --quantize Q3_K_M --llama-quantize BIN \
      --reference OUT.json --llama-server BIN --server-args "--no-repack -ub 1"

With --quantize, the F16 file goes through llama.cpp's own `llama-quantize` (a preset name as it
takes them: Q2_K, Q3_K_M, IQ4_NL, ...) and OUT is the quantized file; the reference is recorded on
it. Use --hidden 256 there: K-quants and IQ4_XS need rows of a multiple of 256.

The vocabulary is GPT-2's byte symbols of ASCII plus a few merges and control tokens (prompts are
given as token ids). Weights are F16 (norms F32), drawn so the logits are far from uniform.
"""
import argparse, json, os, socket, subprocess, sys, time, urllib.request

import numpy as np
import gguf


def byte_symbols():
    # GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest move past 255.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write(arch, path, seed, hidden=128):
    rng = np.random.default_rng(seed)
    # Qwen3 declares a head width of its own (wider than hidden / heads); Phi-3 fuses q/k/v and
    # gate/up (gate first).
    heads, kv_heads, ffn, layers = 4, 2, 256, 2
    head_dim = 64 if arch == "qwen3" else hidden // heads
    # ASCII bytes only: every token is whole UTF-8 on its own, so llama-server reports one
    # probability entry per token (it joins the tokens of an incomplete character into one).
    tokens = byte_symbols()[:128]
    merges = ["Ġ t", "Ġ a", "h e", "i n", "Ġt he"]
    for m in merges:
        tokens.append(m.replace(" ", ""))
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens += specials
    types = [gguf.TokenType.NORMAL] * (len(tokens) - len(specials)) + [gguf.TokenType.CONTROL] * len(specials)
    vocab = len(tokens)

    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(1000000.0 if arch == "qwen3" else 10000.0)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(vocab - 1)
    w.add_bos_token_id(vocab - 3)
    w.add_add_bos_token(False)

    def matrix(name, rows, cols, scale):
        w.add_tensor(name, (rng.standard_normal((rows, cols)) * scale).astype(np.float16))

    def norm(name, n):
        w.add_tensor(name, (1 + 0.3 * rng.standard_normal(n)).astype(np.float32))

    matrix("token_embd.weight", vocab, hidden, 1.0)
    for i in range(layers):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight", hidden)
        if arch == "phi3":
            matrix(p + "attn_qkv.weight", (heads + 2 * kv_heads) * head_dim, hidden, 0.15)
        else:
            matrix(p + "attn_q.weight", heads * head_dim, hidden, 0.15)
            matrix(p + "attn_k.weight", kv_heads * head_dim, hidden, 0.15)
            matrix(p + "attn_v.weight", kv_heads * head_dim, hidden, 0.15)
        if arch == "qwen2":
            for part, rows in (("q", heads * head_dim), ("k", kv_heads * head_dim), ("v", kv_heads * head_dim)):
                w.add_tensor(p + f"attn_{part}.bias", (0.1 * rng.standard_normal(rows)).astype(np.float32))
        if arch == "qwen3":
            norm(p + "attn_q_norm.weight", head_dim)
            norm(p + "attn_k_norm.weight", head_dim)
        matrix(p + "attn_output.weight", hidden, heads * head_dim, 0.1)
        norm(p + "ffn_norm.weight", hidden)
        if arch == "phi3":
            matrix(p + "ffn_up.weight", 2 * ffn, hidden, 0.15)
        else:
            matrix(p + "ffn_gate.weight", ffn, hidden, 0.15)
            matrix(p + "ffn_up.weight", ffn, hidden, 0.15)
        matrix(p + "ffn_down.weight", hidden, ffn, 0.1)
    norm("output_norm.weight", hidden)
    matrix("output.weight", vocab, hidden, 0.6)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference(model, server, out, prompts, n_predict, top, tokenize=False, context=256, extra=()):
    """Prompts are token ids, or text when `tokenize` (then recorded with the ids llama.cpp's
    tokenizer gives them, special tokens parsed and BOS added as the model asks)."""
    port = free_port()
    proc = subprocess.Popen(
        [server, "-m", model, "--port", str(port), "--host", "127.0.0.1", "-c", str(context), "-t", "1", "--no-warmup", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        cases = []
        for prompt in prompts:
            text = None
            if tokenize:
                text = prompt
                req = urllib.request.Request(url + "/tokenize", json.dumps({"content": text, "add_special": True, "parse_special": True}).encode(),
                                             {"Content-Type": "application/json"})
                prompt = json.load(urllib.request.urlopen(req, timeout=60))["tokens"]
            body = {"prompt": prompt, "n_predict": n_predict, "temperature": 0, "top_k": 1, "n_probs": top,
                    "cache_prompt": False, "post_sampling_probs": False}
            req = urllib.request.Request(url + "/completion", json.dumps(body).encode(), {"Content-Type": "application/json"})
            reply = json.load(urllib.request.urlopen(req, timeout=60))
            steps = []
            for item in reply["completion_probabilities"]:
                steps.append({"id": item["id"], "top": [[t["id"], t["logprob"]] for t in item["top_logprobs"]]})
            case = {"prompt": prompt, "steps": steps}
            if text is not None:
                case["text"] = text
            cases.append(case)
        json.dump({"model": os.path.basename(model), "top": top, "cases": cases}, open(out, "w"), indent=1)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("arch")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reference")
    ap.add_argument("--llama-server")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--quantize")
    ap.add_argument("--llama-quantize")
    # `--no-repack -ub 1` records llama.cpp's per-token vec_dot path, the arithmetic the engine
    # follows; its repacked and batched paths differ from it (and from each other) in last bits.
    ap.add_argument("--server-args", default="")
    a = ap.parse_args()
    if a.quantize:
        f16 = a.out + ".f16"
        write(a.arch, f16, a.seed, a.hidden)
        subprocess.run([a.llama_quantize, "--allow-requantize", f16, a.out, a.quantize], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.remove(f16)
    else:
        write(a.arch, a.out, a.seed, a.hidden)
    if a.reference:
        prompts = [[72, 101, 108, 108, 111], [128, 84, 104, 101, 32, 113], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
        reference(a.out, a.llama_server, a.reference, prompts, 24, 5, extra=a.server_args.split())
