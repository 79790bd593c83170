"""Generation speed through Arbor's LocalBackend vs llama-cpp-python called directly.

Same process, same bundled GGUF, same prompt and settings (greedy, fixed seed, 128 new tokens,
n_threads = cpu count, chat format "gemma"), a separate ``Llama`` object for the direct path,
repetitions interleaved so background load hits both alike. Usage::

    .venv/bin/python bench/tokens_per_s.py [--reps 3] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.backends.local import DEFAULT_CONTEXT, LocalBackend
from engine.bundled import bundled_model_path
from engine.plan import GenerationConfig

PROMPT = "Write a detailed story about a lighthouse keeper who finds a message in a bottle."
SEED = 1234
TOP_P = 0.95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    from llama_cpp import Llama

    path = bundled_model_path()
    threads = os.cpu_count() or 1
    messages = [{"role": "user", "content": PROMPT}]
    config = GenerationConfig(temperature=0.0, top_p=TOP_P, max_tokens=args.max_tokens, seed=SEED)

    arbor = LocalBackend(path)
    arbor_llama = arbor._model().llama
    direct = Llama(
        model_path=str(path),
        n_ctx=DEFAULT_CONTEXT,
        n_threads=threads,
        n_threads_batch=threads,
        chat_format="gemma",
        verbose=False,
    )
    assert direct is not arbor_llama
    assert arbor_llama.chat_format == direct.chat_format == "gemma"
    assert arbor_llama.n_threads == direct.n_threads == threads

    def run_arbor() -> int:
        return arbor.complete(messages, config).usage.output_tokens

    def run_direct() -> int:
        result = direct.create_chat_completion(
            messages=messages,
            temperature=0.0,
            top_p=TOP_P,
            max_tokens=args.max_tokens,
            seed=SEED,
        )
        return result["usage"]["completion_tokens"]

    run_arbor()  # warm-up: first decode pays one-off costs on both paths
    run_direct()
    rates: dict[str, list[float]] = {"arbor": [], "direct": []}
    for rep in range(args.reps):
        order = [("arbor", run_arbor), ("direct", run_direct)]
        if rep % 2:
            order.reverse()
        for name, fn in order:
            started = time.perf_counter()
            tokens = fn()
            elapsed = time.perf_counter() - started
            rates[name].append(tokens / elapsed)
            print(
                f"rep {rep + 1} {name:6}: {tokens:4d} tokens in {elapsed:6.2f} s "
                f"= {tokens / elapsed:6.1f} tok/s",
                flush=True,
            )

    arbor_rate = statistics.median(rates["arbor"])
    direct_rate = statistics.median(rates["direct"])
    print(
        f"model: {path.name}, n_threads={threads}, max_tokens={args.max_tokens}, "
        f"reps={args.reps}, temperature=0, seed={SEED}"
    )
    print(f"arbor  (LocalBackend.complete)          median {arbor_rate:6.1f} tok/s")
    print(f"direct (Llama.create_chat_completion)   median {direct_rate:6.1f} tok/s")
    print(f"ratio arbor/direct: {arbor_rate / direct_rate:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
