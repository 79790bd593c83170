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
    dsc = models.add_parser(
        "discover",
        help="find GGUF files (HF cache, LM Studio, GPT4All, Ollama, your folders) and "
        "OpenAI-compatible servers on localhost",
    )
    dsc.add_argument(
        "--folder",
        action="append",
        default=[],
        help="another folder to scan recursively (repeatable; also $ARBOR_MODEL_FOLDERS)",
    )
    dsc.add_argument(
        "--port",
        type=int,
        action="append",
        help="probe these localhost ports instead of 11434, 1234, 8080 and 8000 (repeatable)",
    )
    dsc.add_argument("--no-servers", action="store_true", help="do not probe localhost ports")
    dsc.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="NAME",
        help="register the found model of this name (repeatable; 'all' adds every usable one)",
    )
    dsc.add_argument("--json", action="store_true", help="print the findings as JSON")
    dsc.set_defaults(handler=discover_models)
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


def discover_models(args: argparse.Namespace) -> int:
    """Scan the usual model folders and localhost ports; optionally register what was found."""
    import json

    from engine.errors import ArborError
    from engine.models.discovery import add_candidate, discover, mark_registered
    from engine.models.local_servers import (
        add_server_model,
        detect_servers,
        mark_server_models,
        server_model_name,
    )

    registry = _registry()
    found = mark_registered(discover(folders=args.folder), registry)
    servers = [] if args.no_servers else detect_servers(args.port)
    registered_remote = mark_server_models(servers, registry)
    wanted = set(args.add)
    added: list[str] = []
    failed: list[str] = []

    def want(name: str, usable: bool) -> bool:
        return name in wanted or ("all" in wanted and usable)

    for candidate in found.candidates:
        if want(candidate.name, candidate.usable and not candidate.registered_as):
            wanted.discard(candidate.name)
            try:
                added.append(add_candidate(registry, candidate).name)
            except ArborError as exc:
                failed.append(str(exc))
    for server in servers:
        for model in server.models:
            name = server_model_name(server, model)
            if want(name, (server.base_url, model) not in registered_remote):
                wanted.discard(name)
                try:
                    entry = add_server_model(registry, server, model)
                    registered_remote[(server.base_url, model)] = entry.name
                    added.append(entry.name)
                except ArborError as exc:
                    failed.append(str(exc))
    wanted.discard("all")
    failed += [f"nothing called {name!r} was found." for name in sorted(wanted)]

    if args.json:
        payload = {
            "scanned": [{"source": r.source, "path": str(r.path)} for r in found.scanned],
            "files_seen": found.files_seen,
            "models": [c.to_dict() for c in found.candidates],
            "servers": [
                {
                    **s.to_dict(),
                    "offers": [
                        {
                            "name": server_model_name(s, m),
                            "model": m,
                            "registered_as": registered_remote.get((s.base_url, m)),
                        }
                        for m in s.models
                    ],
                }
                for s in servers
            ],
            "added": added,
            "errors": failed,
        }
        print(json.dumps(payload, indent=2))
    else:
        _print_discovery(found, servers, registered_remote, probed=not args.no_servers)
        for name in added:
            print(f"added {name!r}")
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    return 1 if failed else 0


def _print_discovery(found, servers, registered_remote, *, probed: bool) -> None:
    from engine.models.local_servers import server_model_name

    where = ", ".join(f"{r.source} {r.path}" for r in found.scanned) or "none of the usual folders"
    print(f"scanned: {where} ({found.files_seen} files)")
    for candidate in found.candidates:
        if candidate.usable:
            state = (
                f"registered as {candidate.registered_as!r}" if candidate.registered_as else "new"
            )
            print(f"{candidate.name:40} {candidate.source:11} {state:24} {candidate.facts()}")
            print(f"{'':40} {candidate.path}")
        else:
            print(f"{candidate.name:40} {candidate.source:11} cannot be used: {candidate.problem}")
    if not found.candidates:
        print("no GGUF files found (add folders with --folder or $ARBOR_MODEL_FOLDERS)")
    for server in servers:
        print(f"server {server.label} at {server.base_url}")
        if server.problem:
            print(f"  cannot be used: {server.problem}")
        for model in server.models:
            registered = registered_remote.get((server.base_url, model))
            state = f"registered as {registered!r}" if registered else "new"
            print(f"  {server_model_name(server, model):40} {state}")
    if probed and not servers:
        print("no OpenAI-compatible server answered on the probed localhost ports")
