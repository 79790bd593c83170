"""The shipped example tasks and the recorded example sessions the first-run panel offers.

``assets/examples/tasks.json`` holds the example tasks (the planner's tests use them too);
``assets/examples/recorded/<task id>.arbor`` holds, for a few of them, a session bundle with a
finished plan and run made once by the real bundled model (``scripts/record_examples.py``), so
the workbench and the Inspector have something to show before any model call.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from storage.bundles import import_bundle
from storage.bundles.reading import read_file
from storage.sessions import ArborSession
from storage.workspace import Workspace

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"
TASKS_FILE = EXAMPLES_DIR / "tasks.json"
RECORDED_DIR = EXAMPLES_DIR / "recorded"


@dataclass(frozen=True)
class ExampleTask:
    id: str
    task: str
    kind: str
    language: str
    #: The recorded session bundle, when the example ships with a finished run.
    recorded: Path | None


def example_tasks() -> list[ExampleTask]:
    """The shipped examples, those with a recorded run first."""
    rows = json.loads(TASKS_FILE.read_text(encoding="utf-8"))
    tasks = [
        ExampleTask(
            id=row["id"],
            task=row["task"],
            kind=row.get("kind", ""),
            language=row.get("language", ""),
            recorded=path if (path := RECORDED_DIR / f"{row['id']}.arbor").is_file() else None,
        )
        for row in rows
    ]
    return sorted(tasks, key=lambda task: task.recorded is None)


@dataclass(frozen=True)
class LoadedExample:
    session: ArborSession
    #: The recorded run to show (the session's last run).
    run_id: str | None
    #: False when the session was imported before and is opened as it is now.
    imported: bool


def load_recorded(workspace: Workspace, bundle: Path) -> LoadedExample:
    """The recorded example session in ``workspace``: imported on first use, reopened after.

    Opening it twice does not make a second copy: the bundle's session id is looked up first.
    """
    with tempfile.TemporaryDirectory(prefix="arbor-example-") as tmp:
        contents = read_file(bundle, Path(tmp))
    session_id = ArborSession.from_file_text(contents.session_text, source=bundle.name).id
    if workspace.sessions.exists(session_id):
        session = workspace.sessions.get(session_id)
        imported = False
    else:
        session = import_bundle(workspace, bundle).session
        imported = True
    run_id = session.run_ids[-1] if session.run_ids else None
    return LoadedExample(session=session, run_id=run_id, imported=imported)
