"""Tokens/s through Arbor's LocalBackend vs llama-cpp-python called directly, same prompts.

Arbor is called the way the executor calls it: ``complete(..., on_token=..., cancel=Event())``,
so streaming and the per-token cancel check are part of what is measured. The direct path is
``Llama.create_chat_completion`` on its own ``Llama`` (same GGUF, n_ctx 2048, n_threads = cpu
count, chat format "gemma"). Greedy decoding, so both paths must produce the same text (checked
and printed). Calls are interleaved (prompt by prompt, the order flipping every repetition) so
background load hits both alike; consecutive calls on one path never share a prompt, so
neither gets a warm KV prefix. Rate = completion tokens / wall time of the call (prompt
processing included). Usage::

    .venv/bin/python bench/local_throughput.py [--reps 3] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.models.bundled import bundled_model_path
from engine.models.local import LocalBackend
from engine.plan import GenerationConfig

PROMPTS = [
    "Write a detailed story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works to a curious ten-year-old, step by step.",
    "List the pros and cons of working from home, with a short paragraph for each point.",
    "You are planning a three-day trip to Lisbon on a small budget. Describe each day: where "
    "to stay, what to eat, which neighbourhoods to walk, and how to get around cheaply. Keep "
    "the tone friendly and practical, and mention one free museum or viewpoint per day.",
]
TOP_P = 0.95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    from llama_cpp import Llama

    path = bundled_model_path()
    threads = os.cpu_count() or 1
    config = GenerationConfig(temperature=0.0, top_p=TOP_P, max_tokens=args.max_tokens, seed=1)
    arbor = LocalBackend(path)
    arbor.check()  # load outside the timings, as the direct model is
    direct = Llama(
        model_path=str(path),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        chat_format="gemma",
        verbose=False,
    )

    def run_arbor(messages: list) -> tuple[int, str]:
        pieces: list[str] = []
        completion = arbor.complete(
            messages, config, on_token=pieces.append, cancel=threading.Event()
        )
        assert "".join(pieces) == completion.text, "streamed pieces must join to the text"
        return completion.usage.output_tokens, completion.text

    def run_direct(messages: list) -> tuple[int, str]:
        result = direct.create_chat_completion(
            messages=messages, temperature=0.0, top_p=TOP_P, max_tokens=args.max_tokens, seed=1
        )
        return result["usage"]["completion_tokens"], result["choices"][0]["message"]["content"]

    warm = [{"role": "user", "content": "Say hello."}]
    run_arbor(warm)  # first decode pays one-off costs on both paths
    run_direct(warm)

    tokens = {"arbor": 0, "direct": 0}
    seconds = {"arbor": 0.0, "direct": 0.0}
    rates: dict[str, list[float]] = {"arbor": [], "direct": []}
    same_text = 0
    calls = 0
    for rep in range(args.reps):
        for index, prompt in enumerate(PROMPTS):
            messages = [{"role": "user", "content": prompt}]
            order = [("arbor", run_arbor), ("direct", run_direct)]
            if (rep + index) % 2:
                order.reverse()
            texts = {}
            for name, fn in order:
                started = time.perf_counter()
                count, texts[name] = fn(messages)
                elapsed = time.perf_counter() - started
                tokens[name] += count
                seconds[name] += elapsed
                rates[name].append(count / elapsed)
                print(
                    f"rep {rep + 1} prompt {index + 1} {name:6}: {count:4d} tokens in "
                    f"{elapsed:6.2f} s = {count / elapsed:6.1f} tok/s",
                    flush=True,
                )
            same_text += texts["arbor"] == texts["direct"]
            calls += 1

    print(
        f"model: {path.name}, n_threads={threads}, max_tokens={args.max_tokens}, "
        f"prompts={len(PROMPTS)}, reps={args.reps}, temperature=0"
    )
    print(f"identical text arbor vs direct: {same_text}/{calls}")
    for name, label in (
        ("arbor", "arbor  (LocalBackend.complete, streaming + cancel)"),
        ("direct", "direct (Llama.create_chat_completion)           "),
    ):
        print(
            f"{label} total {tokens[name] / seconds[name]:6.1f} tok/s, "
            f"median call {statistics.median(rates[name]):6.1f} tok/s"
        )
    total_ratio = (tokens["arbor"] / seconds["arbor"]) / (tokens["direct"] / seconds["direct"])
    median_ratio = statistics.median(rates["arbor"]) / statistics.median(rates["direct"])
    print(
        f"ratio arbor/direct: total {total_ratio:.3f}, median {median_ratio:.3f} (target >= 0.95)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
