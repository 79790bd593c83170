"""``playground RUN_ID NODE``: run variants of one node with upstream outputs from a recorded
run (``app.services.playground``), streamed to stdout, recorded as a ``playground`` run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from app.cli.common import Subparsers

if TYPE_CHECKING:
    from engine.run.playground import VariantResult


def register(commands: Subparsers) -> None:
    play = commands.add_parser(
        "playground",
        help="run variants of one node of a recorded run (upstream outputs from that run)",
    )
    play.add_argument("run_id", metavar="RUN_ID")
    play.add_argument("node", metavar="NODE", help="the node's id in the run's plan")
    play.add_argument(
        "--model", metavar="PATH_OR_NAME", help="a registry model's name, 'bundled' or a GGUF file"
    )
    play.add_argument("--temperature", type=float)
    play.add_argument("--max-tokens", type=int, help="most output tokens per call")
    play.add_argument(
        "--variants", type=int, default=1, help="how many variants (distinct seeds), 1-8"
    )
    play.add_argument("--instruction", help="the node's instruction in every variant")
    play.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: each variant's output, tokens, seconds, cost",
    )
    play.set_defaults(handler=playground)


def playground(args: argparse.Namespace) -> int:
    from app.services import playground as service
    from storage.workspace import Workspace

    ws = Workspace()
    source = service.open_node(ws, args.run_id, args.node)
    model = service.resolve_model(ws, args.model) if args.model else None
    if args.max_tokens is not None and args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, not {args.max_tokens}.")
    variants = service.variants_from(
        source.base,
        args.variants,
        model=model,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        instruction=args.instruction,
    )
    if args.instruction is not None:
        source.prompt(variants[0])  # a broken template is refused before any model loads
    shown: dict[int, int] = {}

    def stream(index: int, text: str) -> None:
        if index not in shown:
            shown[index] = 0
            print(f"\n== variant {index + 1}: {variants[index].describe()}", flush=True)
        if text.startswith(text[: shown[index]]) and len(text) >= shown[index]:
            sys.stdout.write(text[shown[index] :])
        else:  # a strategy's next sample restarts the text
            sys.stdout.write("\n" + text)
        shown[index] = len(text)
        sys.stdout.flush()

    def finished(result: VariantResult) -> None:
        if args.json:
            return
        if result.index not in shown:
            print(f"\n== variant {result.index + 1}: {result.variant.describe()}")
        facts = [
            f"{result.input_tokens} tokens in, {result.output_tokens} out",
            f"{result.seconds:.2f} s",
            f"${result.cost_usd:.6f}",
        ]
        print()
        if result.error:
            print(f"   failed: {result.error}")
        if result.suspect:
            facts.append(f"suspect: {result.suspect}")
        print("   " + " · ".join(facts), flush=True)

    if not args.json:
        note = f" (no recorded output for {', '.join(source.missing)})" if source.missing else ""
        print(f"playground of node {args.node} from run {args.run_id}{note}")
    outcome = service.run_variants(
        ws, source, variants, on_text=None if args.json else stream, on_result=finished
    )
    if args.json:
        print(
            json.dumps(
                {
                    "source_run": args.run_id,
                    "node": args.node,
                    "playground_run": outcome.run_id,
                    "record_problem": outcome.record_problem,
                    "recorded_output": source.recorded_output,
                    "variants": [result.summary() for result in outcome.results],
                },
                ensure_ascii=False,
            )
        )
    else:
        where = (
            f"recorded as run {outcome.run_id}"
            if outcome.run_id
            else f"not recorded: {outcome.record_problem}"
        )
        print(f"\n{len(outcome.results)} variant(s); {where}")
    if not any(result.ok for result in outcome.results):
        first = outcome.results[0].error if outcome.results else "nothing ran"
        print(f"error: no variant finished: {first}", file=sys.stderr)
        return 1
    return 0
