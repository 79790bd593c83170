"""Plan diffs and plan revisions: every saved change of a session's plan, numbered per session."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from sqlmodel import SQLModel, create_engine

from engine import editing
from engine.errors import CycleError, SessionError
from engine.plan import ModelRef, Plan
from engine.plan.diff import PlanDiff, diff_plans
from storage.revisions import RevisionStore
from storage.sessions import ArborSession, SessionRecord, SessionStore
from tests.support.fake_backend import tree


def _plan() -> Plan:
    return tree(
        {
            "id": "root",
            "children": [
                {"id": "a"},
                {"id": "b", "depends_on": ["a"]},
                {"id": "c", "children": [{"id": "c1"}]},
            ],
        }
    )


# -- diff_plans ------------------------------------------------------------------------------


def test_diff_of_equal_plans_is_empty():
    diff = diff_plans(_plan(), _plan())
    assert diff == PlanDiff() and diff.empty and diff.summary() == "no changes"


def test_diff_lists_added_and_removed_nodes_in_tree_order():
    new, new_id = editing.add_child(_plan(), "a", "Leaf")
    new = editing.remove_node(new, "c")
    diff = diff_plans(_plan(), new)
    assert diff.added == [new_id]
    assert diff.removed == ["c", "c1"]
    assert diff.changed == {}
    assert diff.summary() == "1 added, 2 removed"


def test_diff_names_the_changed_fields_of_each_node():
    new = editing.update_node(_plan(), "a", title="Alpha", difficulty=3, model=ModelRef(path="x"))
    new = editing.remove_dependency(new, "b", "a")
    diff = diff_plans(_plan(), new)
    assert diff.changed == {"a": ["title", "model", "difficulty"], "b": ["depends_on"]}
    assert diff.summary() == "2 changed"


def test_diff_reports_a_move_as_parent_and_a_reorder_as_position_of_the_moved_node_only():
    moved = editing.move_node(_plan(), "a", "c")
    assert diff_plans(_plan(), moved).changed == {"a": ["parent"]}
    reordered = editing.reorder_node(_plan(), "c", 0)
    assert diff_plans(_plan(), reordered).changed == {"c": ["position"]}
    # Adding a sibling in front shifts indexes but moves nobody.
    shifted, new_id = editing.add_child(_plan(), "root", "First", index=0)
    diff = diff_plans(_plan(), shifted)
    assert diff.added == [new_id] and diff.changed == {}


def test_diff_notes_task_and_default_changes():
    new = _plan().model_copy(update={"task": "another", "default_model": ModelRef(path="m.gguf")})
    diff = diff_plans(_plan(), new)
    assert diff.task_changed and diff.defaults_changed == ["default_model"]
    assert diff.summary() == "task changed; default model changed"


# -- revisions through sessions --------------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> SessionStore:
    return SessionStore(tmp_path / "sessions.sqlite")


def test_saving_records_a_revision_only_when_the_plan_changed(store):
    session = ArborSession(name="s", task="t", plan=_plan())
    store.save(session, message="decomposed")
    store.save(session)  # same plan: nothing new
    session.name = "renamed"
    store.save(session)  # name only: nothing new
    session.plan = editing.update_node(session.plan, "a", title="Alpha")
    store.save(session, message="renamed a")
    revisions = store.revisions.list(session.id)
    assert [(r.number, r.message, r.summary) for r in revisions] == [
        (2, "renamed a", "1 changed"),
        (1, "decomposed", "first revision"),
    ]
    assert revisions[0].plan == session.plan and revisions[1].plan == _plan()
    assert all(r.created_at.tzinfo is not None for r in revisions)
    assert revisions[0].created_at >= revisions[1].created_at


def test_a_session_without_a_plan_has_no_revisions(store):
    session = store.save(ArborSession(name="empty"))
    assert store.revisions.list(session.id) == []


def test_a_refused_save_writes_neither_the_session_nor_a_revision(store):
    broken = _plan()
    broken.node("a").depends_on = ["b"]
    session = ArborSession(plan=broken)
    with pytest.raises(CycleError):
        store.save(session)
    assert not store.exists(session.id)
    assert store.revisions.list(session.id) == []


def test_get_returns_one_revision_with_its_summary_and_refuses_a_missing_one(store):
    session = store.save(ArborSession(plan=_plan()))
    session.plan = editing.remove_node(session.plan, "c")
    store.save(session)
    second = store.revisions.get(session.id, 2)
    assert second.number == 2 and second.plan == session.plan
    assert second.summary == "2 removed"
    assert store.revisions.get(session.id, 1).summary == "first revision"
    with pytest.raises(SessionError, match=rf"Session '{session.id}' has no plan revision 3"):
        store.revisions.get(session.id, 3)
    with pytest.raises(SessionError, match="has no plan revision 1"):
        store.revisions.get("nobody", 1)


def test_diff_compares_any_two_revisions(store):
    session = store.save(ArborSession(plan=_plan()))
    session.plan, new_id = editing.add_child(session.plan, "root", "Extra")
    store.save(session)
    session.plan = editing.update_node(session.plan, "b", instruction="Differently.")
    store.save(session)
    diff = store.revisions.diff(session.id, 1, 3)
    assert diff.added == [new_id] and diff.changed == {"b": ["instruction"]}
    assert store.revisions.diff(session.id, 3, 1).removed == [new_id]
    with pytest.raises(SessionError):
        store.revisions.diff(session.id, 1, 9)


def test_restoring_an_old_revision_saves_it_as_a_new_one(store):
    session = store.save(ArborSession(plan=_plan()))
    session.plan = editing.remove_node(session.plan, "a")
    store.save(session)
    session.plan = store.revisions.get(session.id, 1).plan
    store.save(session, message="restored revision 1")
    latest = store.revisions.list(session.id)[0]
    assert (latest.number, latest.message, latest.plan) == (3, "restored revision 1", _plan())
    assert store.get(session.id).plan == _plan()


def test_revision_numbers_are_per_session(store):
    one = store.save(ArborSession(plan=_plan()))
    two = store.save(ArborSession(plan=_plan()))
    one.plan = editing.remove_node(one.plan, "a")
    store.save(one)
    assert [r.number for r in store.revisions.list(one.id)] == [2, 1]
    assert [r.number for r in store.revisions.list(two.id)] == [1]


def test_deleting_a_session_deletes_its_revisions_and_no_others(store):
    gone = store.save(ArborSession(plan=_plan()))
    kept = store.save(ArborSession(plan=_plan()))
    store.delete(gone.id)
    assert store.revisions.list(gone.id) == []
    assert len(store.revisions.list(kept.id)) == 1
    with sqlite3.connect(store.path) as con:
        rows = con.execute("SELECT session_id FROM plan_revisions").fetchall()
    assert rows == [(kept.id,)]


def test_record_directly_returns_none_for_an_unchanged_plan(tmp_path):
    revisions = RevisionStore(create_engine(f"sqlite:///{tmp_path / 'r.sqlite'}"))
    first = revisions.record("s1", _plan(), "start")
    assert first is not None and (first.number, first.message) == (1, "start")
    assert revisions.record("s1", _plan()) is None
    assert revisions.record("s1", editing.remove_node(_plan(), "a")).number == 2


def test_a_sessions_file_from_before_revisions_gains_the_table(tmp_path):
    path = tmp_path / "sessions.sqlite"
    old = create_engine(f"sqlite:///{path}")
    SQLModel.metadata.create_all(old, tables=[SessionRecord.__table__])
    old.dispose()
    store = SessionStore(path)
    session = store.save(ArborSession(plan=_plan()))
    assert [r.number for r in store.revisions.list(session.id)] == [1]


def test_a_damaged_revision_is_reported_naming_it(store):
    session = store.save(ArborSession(plan=_plan()))
    with sqlite3.connect(store.path) as con:
        con.execute("UPDATE plan_revisions SET plan_json = 'task: [' WHERE number = 1")
    with pytest.raises(SessionError, match=rf"revision 1 of session '{session.id}' is damaged"):
        store.revisions.get(session.id, 1)
    with pytest.raises(SessionError, match=r"revision 1 .* is damaged: its plan is not valid JSON"):
        store.revisions.list(session.id)
    # The next save still records (a damaged latest revision never equals a valid plan), and
    # that revision reads fine on its own.
    store.save(session)
    assert store.revisions.get(session.id, 2).summary.startswith("changed")


def test_created_at_is_utc(store):
    before = datetime.now(UTC)
    session = store.save(ArborSession(plan=_plan()))
    created = store.revisions.get(session.id, 1).created_at
    assert created.tzinfo is not None and created >= before.replace(microsecond=0)
