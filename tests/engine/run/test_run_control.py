"""Run control with an in-process fake model: pins, breakpoints, step mode, forked reuse.

Pure coordination logic; the same loop against the real bundled model is in
tests/app/services/test_run_control_real.py.
"""

from __future__ import annotations

import threading

import pytest

from engine.errors import ArborError
from engine.run.budget import RunCaps
from engine.run.call_cache import CachedCall
from engine.run.control import Decision, Pause, RunControl
from engine.run.events import NodeFinished, RunContinued, RunEdited, RunPaused
from engine.run.executor import execute_plan
from tests.support.fake_backend import Behaviour, fake_factory, fake_models, tree

# root <- a, b; b depends on a
SPEC = {"id": "root", "children": [{"id": "a"}, {"id": "b", "depends_on": ["a"]}]}


class Scripted:
    """A controller answering each pause with the next decision; records what it was shown."""

    def __init__(self, *decisions: Decision | None):
        self.decisions = list(decisions)
        self.pauses: list[Pause] = []

    def decide(self, pause: Pause) -> Decision | None:
        self.pauses.append(pause)
        return self.decisions.pop(0) if self.decisions else None


def _run(control: RunControl | None = None, behaviours=None, caps=None):
    factory, recorder = fake_factory(behaviours)
    events: list[object] = []
    result = execute_plan(
        fake_models(tree(SPEC)),
        caps,
        backend_factory=factory,
        listeners=[events.append],
        control=control,
    )
    return result, recorder, events


def test_a_pinned_node_calls_nothing_and_its_dependants_read_the_pin():
    result, recorder, events = _run(RunControl(pins={"a": "PINNED-TEXT-42"}))
    assert result.status == "completed"
    assert "a" not in recorder.calls
    assert "PINNED-TEXT-42" in recorder.prompts["b"]
    assert "PINNED-TEXT-42" in recorder.prompts["root"]
    finished = {e.node_id: e for e in events if isinstance(e, NodeFinished)}
    assert finished["a"].pinned and finished["a"].output == "PINNED-TEXT-42"
    assert not finished["b"].pinned
    assert result.pinned == ["a"] and "a" not in result.executed


def test_pins_naming_an_unknown_node_are_refused_before_anything_runs():
    with pytest.raises(ArborError, match="nope"):
        _run(RunControl(pins={"nope": "x"}))


def test_without_a_controller_a_breakpoint_ends_the_run_paused():
    result, recorder, events = _run(RunControl(break_before={"b"}))
    assert result.status == "paused" and result.paused_node == "b"
    assert recorder.calls == ["a"]
    paused = [e for e in events if isinstance(e, RunPaused)]
    assert [(p.node_id, p.when) for p in paused] == [("b", "before")]
    assert paused[0].inputs == {"a": "output of a"}
    assert "output of a" in (paused[0].prompt or "")
    assert result.nodes["b"].status == "skipped" and result.nodes["root"].status == "skipped"


def test_continue_with_an_edited_instruction_runs_the_new_instruction_and_records_it():
    controller = Scripted(Decision("continue", instruction="do b differently, NEW-WORDS"))
    result, recorder, events = _run(RunControl(break_before={"b"}, controller=controller))
    assert result.status == "completed"
    assert "NEW-WORDS" in recorder.prompts["b"]
    edits = [e for e in events if isinstance(e, RunEdited)]
    assert [(e.node_id, e.field) for e in edits] == [("b", "instruction")]
    assert "NEW-WORDS" in edits[0].plan_json and "NEW-WORDS" in edits[0].edits_json
    assert any(isinstance(e, RunContinued) for e in events)


def test_an_edited_prompt_is_what_the_model_receives():
    controller = Scripted(Decision("continue", prompt="EDITED PROMPT ONLY"))
    result, recorder, _ = _run(RunControl(break_before={"a"}, controller=controller))
    assert result.status == "completed"
    assert recorder.prompts["a"].endswith("EDITED PROMPT ONLY")
    assert controller.pauses[0].prompt and "do a" in controller.pauses[0].prompt


def test_an_output_edited_after_a_node_reaches_its_dependants():
    controller = Scripted(Decision("continue", output="FIXED OUTPUT"))
    result, recorder, _ = _run(RunControl(break_after={"a"}, controller=controller))
    assert controller.pauses[0].when == "after"
    assert controller.pauses[0].output == "output of a"
    assert "FIXED OUTPUT" in recorder.prompts["b"]
    assert result.nodes["a"].pinned and result.edits[0].field == "output"


def test_step_mode_pauses_before_every_node_until_continue():
    controller = Scripted(Decision("step"), Decision("step"), Decision("continue"))
    result, _, _ = _run(RunControl(step=True, controller=controller))
    assert result.status == "completed"
    # three pauses (a, b, root would be the fourth): "continue" at the third ends step mode
    assert [p.node_id for p in controller.pauses] == ["a", "b", "root"]
    assert {p.reason for p in controller.pauses} == {"step"}


def test_skip_runs_dependants_without_the_node():
    controller = Scripted(Decision("skip"))
    result, recorder, _ = _run(RunControl(break_before={"a"}, controller=controller))
    assert "a" not in recorder.calls and result.nodes["a"].status == "skipped"
    assert result.nodes["b"].status == "done"


def test_cancel_at_a_pause_cancels_the_run():
    result, recorder, _ = _run(
        RunControl(break_before={"b"}, controller=Scripted(Decision("cancel")))
    )
    assert result.status == "cancelled" and recorder.calls == ["a"]


def test_the_time_cap_clock_stops_while_paused():
    class Slow:
        def decide(self, pause: Pause) -> Decision:
            threading.Event().wait(1.2)  # longer than the whole time cap
            return Decision("continue")

    result, _, _ = _run(
        RunControl(break_before={"b"}, controller=Slow()), caps=RunCaps(wall_time_s=1.0)
    )
    assert result.status == "completed", result.stop_reason


def test_forked_nodes_are_reused_from_the_source_run_without_calls():
    reuse = {"a": CachedCall("c1", "run-source", "SOURCE A", 3, 4)}
    result, recorder, _ = _run(RunControl(reuse=reuse, forked_from="run-source"))
    assert "a" not in recorder.calls
    assert result.nodes["a"].reused_from == "run-source"
    assert "SOURCE A" in recorder.prompts["b"]


def test_a_breakpoint_after_the_root_pauses_a_finished_run():
    result, _, _ = _run(RunControl(break_after={"root"}))
    assert result.status == "paused" and result.answer == "output of root"


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_failing_node_with_a_breakpoint_still_fails_cleanly(when):
    control = RunControl(break_before={"a"} if when == "before" else set())
    control.break_after = {"a"} if when == "after" else set()
    control.controller = Scripted(Decision("continue"))
    result, _, _ = _run(control, behaviours={"a": Behaviour(error=RuntimeError("boom"))})
    assert result.status == "failed" and result.nodes["b"].status == "blocked"
