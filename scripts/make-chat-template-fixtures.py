#!/usr/bin/env python3
"""Renders chat templates with Python's jinja2 exactly as Hugging Face's apply_chat_template does
(trim_blocks, lstrip_blocks, loop controls, json.dumps-style tojson) and writes the expected
outputs that Tests/TokenizersTests compare sllm's Jinja interpreter against.

Usage: scripts/make-chat-template-fixtures.py TEMPLATE_DIR OUT.json
TEMPLATE_DIR holds NAME.jinja files (e.g. llama.cpp's models/templates and the SmolLM2 GGUF's
tokenizer.chat_template saved as smollm2.jinja)."""
import json, os, sys
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env

CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is the capital of France?"}],
    "system": [
        {"role": "system", "content": "  You are terse.  "},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello. How can I help?"},
        {"role": "user", "content": "Tell me a joke about \"quotes\" & <tags>\nin two lines."},
    ],
    "multi": [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And 2+2? Answer in 日本語."},
    ],
    "not-alternating": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
}

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]

def main():
    directory, out = sys.argv[1], sys.argv[2]
    env = environment()
    cases = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".jinja"):
            continue
        source = open(os.path.join(directory, name)).read()
        template = env.from_string(source)
        for conversation, messages in list(CONVERSATIONS.items()) + [("tools", CONVERSATIONS["single"])]:
            for generation in (True, False):
                # A fixed date so that templates that print today's date stay reproducible.
                context = {"messages": messages, "add_generation_prompt": generation, "bos_token": "<s>", "eos_token": "</s>",
                           "date_string": "02 Jan 2025"}
                if conversation == "tools":
                    context["tools"] = TOOLS
                try:
                    expected, error = template.render(**context), None
                except jinja2.exceptions.TemplateError as e:
                    expected, error = None, str(e)
                cases.append({"template": name[:-6], "conversation": conversation, "add_generation_prompt": generation,
                              "messages": messages, "tools": context.get("tools"), "expected": expected, "error": error})
    json.dump({"templates": {n[:-6]: open(os.path.join(directory, n)).read() for n in sorted(os.listdir(directory)) if n.endswith(".jinja")},
               "cases": cases}, open(out, "w"), ensure_ascii=False, indent=1)

main()
