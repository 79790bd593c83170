"""Annotations: ``annotate`` a run, a node's output or a model call good or bad (optionally
adding it to a workspace dataset), and list a run's ``annotations``.

Label and score are checked by the store, not by argparse, so a wrong value is one
``error: ...`` line (exit status 2) like every other refusal, without the usage text.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from app.cli.common import Subparsers, print_table, shown


def register(commands: Subparsers) -> None:
    ann = commands.add_parser(
        "annotate", help="label a run, a node's output or a model call good or bad"
    )
    ann.add_argument("run_id", metavar="RUN_ID")
    ann.add_argument("node", metavar="NODE", nargs="?", help="node id; omit for the whole run")
    ann.add_argument("--label", required=True, metavar="good|bad")
    ann.add_argument("--score", metavar="X", help="a score from 0 to 1")
    ann.add_argument("--note", metavar="TEXT")
    ann.add_argument("--call", metavar="CALL_ID", help="annotate this model call of the node")
    ann.add_argument("--correct", metavar="TEXT", help="the output that would have been right")
    ann.add_argument(
        "--dataset",
        metavar="NAME",
        help="also add it to the workspace dataset NAME (created when missing) as an example",
    )
    ann.set_defaults(handler=annotate_run)

    lst = commands.add_parser("annotations", help="list a run's annotations")
    lst.add_argument("run_id", metavar="RUN_ID")
    lst.add_argument("--json", action="store_true", help="print the annotations as JSON lines")
    lst.set_defaults(handler=list_run_annotations)


def _score(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        from engine.errors import TraceStoreError

        raise TraceStoreError(f"--score must be a number from 0 to 1, not {text!r}.")
    return value


def annotate_run(args: argparse.Namespace) -> int:
    from app.services import annotations
    from storage.workspace import Workspace

    workspace = Workspace()
    label = args.label.strip().lower()
    if args.dataset:  # refused before anything is stored, so a failed command changes nothing
        annotations.check_dataset_request(workspace, args.dataset, label, args.correct)
    row = annotations.annotate(
        workspace,
        args.run_id,
        args.node,
        label=label,
        score=_score(args.score),
        note=args.note,
        call_id=args.call,
        corrected_output=args.correct,
    )
    target = f"node {row['node_id']}" if row["node_id"] else "the run"
    if row["call_id"]:
        target += f", call {row['call_id']}"
    print(f"annotation {row['annotation_id']}: {target} of run {args.run_id} is {row['label']}")
    if args.dataset:
        added = annotations.add_to_dataset(
            workspace, args.run_id, row["annotation_id"], args.dataset
        )
        made = "created" if added.created else "added to"
        print(f"example {added.example.id} {made} {added.path} ({added.size} examples)")
    return 0


def list_run_annotations(args: argparse.Namespace) -> int:
    from app.services import annotations
    from storage.workspace import Workspace

    rows = annotations.list_annotations(Workspace(), args.run_id)
    if args.json:
        for row in rows:
            print(json.dumps({**row, "created_at": row["created_at"].isoformat()}))
        return 0
    if not rows:
        print(f"run {args.run_id} has no annotations", file=sys.stderr)
        return 0
    table = [
        {
            "id": row["annotation_id"],
            "node": row["node_id"] or "(run)",
            "call": row["call_id"],
            "label": row["label"],
            "score": row["score"],
            "note": shown((row["note"] or "")[:60]),
            "corrected": shown((row["corrected_output"] or "")[:40]) or None,
        }
        for row in rows
    ]
    print_table(table, ["id", "node", "call", "label", "score", "note", "corrected"])
    return 0
