"""Best-of-8 on one prompt: Arbor's batched ``complete_samples`` vs naive loops of 8 calls.

Bundled model, a ~300-token prompt, 8 seeds, max_tokens 128, temperature 0.8. Three ways:

* ``arbor``: ``LocalBackend.complete_samples(messages, config, seeds, cancel=Event())`` — the
  prompt is decoded once and the 8 samples are decoded together as one batch.
* ``naive``: 8 ``create_chat_completion`` calls on one ``Llama``, its state reset before each
  (what a loop over fresh calls costs: every sample pays the prompt).
* ``naive+reuse``: the same 8 calls without the reset, so llama-cpp-python reuses the prompt's
  KV prefix from the previous call (the honest stronger baseline: only the first pays).

Every measurement starts with the prompt not cached (Arbor's model state is reset too). The
three run interleaved, the order rotating every repetition. Usage::

    .venv/bin/python bench/best_of_n.py [--reps 3] [--samples 8] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.models.bundled import bundled_model_path
from engine.models.local import LocalBackend, render_prompt
from engine.plan import GenerationConfig

PROMPT = """You are a support agent for a small company that sells refurbished laptops online.
Read the customer's email and write a reply.

Customer email:
"Hello, I ordered a refurbished ThinkPad T480 from your shop three weeks ago (order 58213).
It arrived quickly and looks almost new, which I was happy about. However, after a few days
I noticed that the battery drops from 100% to about 40% in less than an hour of light use,
mostly web browsing and writing documents. The listing said the battery had at least 80% of
its original capacity. I also found that one of the USB-C ports only charges the laptop but
does not connect to my external monitor, although the other port works fine. I use this
laptop for work and I cannot be without it for more than two or three days. Could you tell
me what my options are? I would prefer a battery replacement over returning the whole
laptop, but I want to know if the USB-C port problem can also be fixed. I am also worried
about the shipping costs, since I live in a rural area and the courier charged me extra last
time. Thank you, Maria."

Company policy: refurbished laptops have a 12-month warranty covering battery capacity below
80% and faulty ports. Repairs are done within 3 working days of receiving the laptop. The
company pays return shipping for warranty repairs, including rural surcharges. A replacement
battery can be mailed to the customer instead if she prefers to swap it herself (two screws).

Write a short, warm and precise reply: acknowledge both problems, explain her options, say
who pays shipping, and give the next step she should take."""
TEMPERATURE = 0.8
TOP_P = 0.95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    from llama_cpp import Llama

    path = bundled_model_path()
    threads = os.cpu_count() or 1
    messages = [{"role": "user", "content": PROMPT}]
    seeds = list(range(1, args.samples + 1))
    config = GenerationConfig(temperature=TEMPERATURE, top_p=TOP_P, max_tokens=args.max_tokens)
    arbor = LocalBackend(path)
    arbor_llama = arbor._model().llama
    direct = Llama(
        model_path=str(path),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        chat_format="gemma",
        verbose=False,
    )
    n_prompt = len(render_prompt(arbor_llama, messages).tokens)

    def run_arbor() -> list[int]:
        arbor._model().llama.reset()  # forget any prompt prefix a previous run left
        completions = arbor.complete_samples(messages, config, seeds, cancel=threading.Event())
        return [c.usage.output_tokens for c in completions]

    def direct_call(seed: int) -> int:
        result = direct.create_chat_completion(
            messages=messages,
            temperature=TEMPERATURE,
            top_p=TOP_P,
            max_tokens=args.max_tokens,
            seed=seed,
        )
        return result["usage"]["completion_tokens"]

    def run_naive() -> list[int]:
        counts = []
        for seed in seeds:
            direct.reset()  # a fresh state: this sample pays the whole prompt
            counts.append(direct_call(seed))
        return counts

    def run_naive_reuse() -> list[int]:
        direct.reset()  # only the first sample pays the prompt
        return [direct_call(seed) for seed in seeds]

    runs: list[tuple[str, Callable[[], list[int]]]] = [
        ("arbor", run_arbor),
        ("naive", run_naive),
        ("naive+reuse", run_naive_reuse),
    ]
    arbor.complete(messages, config.model_copy(update={"max_tokens": 4}))  # warm-up, both paths
    direct_call(0)

    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    tokens: dict[str, list[int]] = {name: [] for name, _ in runs}
    for rep in range(args.reps):
        shift = rep % len(runs)
        for name, fn in runs[shift:] + runs[:shift]:
            started = time.perf_counter()
            counts = fn()
            elapsed = time.perf_counter() - started
            times[name].append(elapsed)
            tokens[name].append(sum(counts))
            print(
                f"rep {rep + 1} {name:12}: {len(counts)} samples, {sum(counts):4d} tokens in "
                f"{elapsed:6.2f} s = {sum(counts) / elapsed:6.1f} tok/s",
                flush=True,
            )

    print(
        f"model: {path.name}, n_threads={threads}, prompt={n_prompt} tokens, "
        f"samples={args.samples}, max_tokens={args.max_tokens}, temperature={TEMPERATURE}, "
        f"reps={args.reps}"
    )
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, _ in runs:
        rate = sum(tokens[name]) / sum(times[name])
        print(f"{name:12} median wall {median[name]:6.2f} s   ({rate:6.1f} tok/s overall)")
    print(f"speed-up arbor vs naive:       {median['naive'] / median['arbor']:.2f}x (target >= 2)")
    print(f"speed-up arbor vs naive+reuse: {median['naive+reuse'] / median['arbor']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
