#!/usr/bin/env python3
"""Drives a running `sllm serve` with the official `openai` Python client, unmodified.

usage: openai-client-check.py BASE_URL MODEL   (BASE_URL like http://127.0.0.1:8343/v1)
Exits 0 and prints `ok` when every check passes; raises on the first failure.
"""
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="sk-unused", max_retries=0)

# Models
listed = [m.id for m in client.models.list()]
assert model in listed, listed
assert client.models.retrieve(model).id == model

# Chat, whole
chat = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=16, temperature=0, seed=1)
assert chat.object == "chat.completion", chat
assert chat.choices[0].message.role == "assistant"
text = chat.choices[0].message.content
assert text, chat
assert chat.choices[0].finish_reason in ("stop", "length")
assert chat.usage.completion_tokens >= 1 and chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

# Chat, streamed with usage: the same greedy text
stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True})
pieces, usage, finish = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
assert "".join(pieces) == text, ("".join(pieces), text)
assert finish in ("stop", "length") and usage is not None and usage.completion_tokens == chat.usage.completion_tokens

# Logprobs
lp = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0, logprobs=True, top_logprobs=2)
content = lp.choices[0].logprobs.content
assert len(content) >= 1 and len(content[0].top_logprobs) == 2

# Legacy completions, whole and streamed
completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=4, temperature=0)
assert completion.choices[0].text.startswith(" Paris"), completion
streamed = "".join(c.choices[0].text for c in client.completions.create(
    model=model, prompt="The capital of France is", max_tokens=4, temperature=0, stream=True) if c.choices)
assert streamed == completion.choices[0].text, (streamed, completion.choices[0].text)

# Errors arrive as the client's typed exceptions
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as error:
    assert error.status_code == 404
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], max_tokens=0)
    raise AssertionError("max_tokens 0 accepted")
except openai.BadRequestError as error:
    assert error.status_code == 400 and error.body.get("param") == "max_tokens", error.body

print("ok")
