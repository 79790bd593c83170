"""The model registry: ``models`` (list, add-local, add-remote, remove, test)."""

from __future__ import annotations

import argparse
import sys

from app.cli.common import Subparsers

KINDS = ("auto", "base", "instruct")
KIND_HELP = (
    "base: a pretrained text continuer, sent few-shot completion prompts; instruct: a chat "
    "model, sent chat prompts; auto (default): detected from the GGUF header (chat template, "
    "'-it'/'instruct' tags), remote endpoints count as instruct"
)


def register(commands: Subparsers) -> None:
    mod = commands.add_parser("models", help="the model registry (default: list it)")
    mod.set_defaults(handler=list_models)
    models = mod.add_subparsers(dest="models_command")
    models.add_parser("list", help="list registered and discovered models").set_defaults(
        handler=list_models
    )
    loc = models.add_parser("add-local", help="register a local GGUF file")
    loc.add_argument("path")
    loc.add_argument("--name", help="default: the file name without .gguf")
    loc.add_argument("--max-concurrent", type=int)
    loc.add_argument("--kind", choices=KINDS, default="auto", help=KIND_HELP)
    loc.set_defaults(handler=add_local_model)
    rem = models.add_parser("add-remote", help="register an OpenAI-compatible endpoint")
    rem.add_argument("--name", required=True)
    rem.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    rem.add_argument("--model", required=True, help="model name the endpoint serves")
    rem.add_argument("--key-env", help="NAME of the environment variable holding the API key")
    rem.add_argument("--price-in", type=float, default=0.0, help="USD per million input tokens")
    rem.add_argument("--price-out", type=float, default=0.0, help="USD per million output tokens")
    rem.add_argument("--max-concurrent", type=int, default=4)
    rem.add_argument("--timeout", type=float, default=120.0, help="seconds per call")
    rem.add_argument("--kind", choices=KINDS, default="auto", help=KIND_HELP)
    rem.set_defaults(handler=add_remote_model)
    knd = models.add_parser("set-kind", help="declare a model base or instruct (or auto)")
    knd.add_argument("name")
    knd.add_argument("kind", choices=KINDS, help=KIND_HELP)
    knd.set_defaults(handler=set_model_kind)
    rmv = models.add_parser("remove", help="remove a registered model")
    rmv.add_argument("name")
    rmv.set_defaults(handler=remove_model)
    tst = models.add_parser("test", help="check models step by step (default: all)")
    tst.add_argument("name", nargs="?")
    tst.set_defaults(handler=test_models)


def _registry():
    from engine.models.registry import Registry
    from storage import paths

    return Registry.in_data_dir(paths.data_dir())


def list_models(_: argparse.Namespace) -> int:
    registry = _registry()
    print(f"registry: {registry.path}  (models folder: {registry.models_dir})")
    for row in registry.rows():
        facts = ", ".join(
            str(part)
            for part in (
                row["architecture"],
                row["quantisation"],
                row["context"] and f"ctx {row['context']}",
                row["size_mb"] and f"{row['size_mb']:,.0f} MB",
                row["chat_format"] and f"chat {row['chat_format']}",
                row["key_variable"] and f"key ${row['key_variable']}",
            )
            if part
        )
        prices = f"${row['price_in_per_m']:g}/${row['price_out_per_m']:g} per M"
        print(
            f"{row['name']:24} {row['kind']:10} {prices}  x{row['max_concurrent']}  "
            f"{row['where']}" + (f"  [{facts}]" if facts else "")
        )
        print(f"{'':24} kind: {row['model_kind']}")
        if row["problem"]:
            print(f"{'':24} problem: {row['problem']}")
    return 0


def add_local_model(args: argparse.Namespace) -> int:
    settings = {"max_concurrent": args.max_concurrent} if args.max_concurrent else {}
    registry = _registry()
    entry = registry.add_local(args.path, args.name, model_kind=args.kind, **settings)
    print(f"added {entry.name!r}: {entry.path}  (kind: {registry.kind_of(entry).describe()})")
    return 0


def set_model_kind(args: argparse.Namespace) -> int:
    registry = _registry()
    entry = registry.update(args.name, model_kind=args.kind)
    print(f"{entry.name!r}: kind {registry.kind_of(entry).describe()}")
    return 0


def add_remote_model(args: argparse.Namespace) -> int:
    entry = _registry().add_remote(
        args.name,
        args.base_url,
        args.model,
        api_key_env=args.key_env,
        price_in_per_m=args.price_in,
        price_out_per_m=args.price_out,
        max_concurrent=args.max_concurrent,
        timeout_s=args.timeout,
        model_kind=args.kind,
    )
    print(f"added {entry.name!r}: {entry.target}")
    return 0


def remove_model(args: argparse.Namespace) -> int:
    _registry().remove(args.name)
    print(f"removed {args.name!r}")
    return 0


def test_models(args: argparse.Namespace) -> int:
    from engine.models.entry_checks import check_entry

    registry = _registry()
    entries = [registry.get(args.name)] if args.name else registry.entries()
    failed = 0
    for entry in entries:
        check = check_entry(entry)
        print(f"{entry.name}: {'ok' if check.ok else 'FAILED'}")
        for step in check.steps:
            mark = "ok  " if step.ok else "FAIL"
            print(f"  {mark} {step.name} ({step.seconds:.2f} s): {step.detail}")
        if not check.ok:
            failed += 1
            print(f"error: {check.summary()}", file=sys.stderr)
    return 1 if failed else 0
