"""The plan chart: layout, edges of both kinds, colours, and readability at 50 nodes."""

from __future__ import annotations

from app.ui.graph import LABEL_CHARS, SELECTION, picked_node, plan_chart, plan_frames, tree_layout
from engine.plan import Node, Plan


def _plan() -> Plan:
    return Plan(
        task="t",
        root=Node(
            id="root",
            title="Root",
            children=[
                Node(
                    id="a",
                    title="A",
                    children=[Node(id="a1", title="A1"), Node(id="a2", title="A2")],
                ),
                Node(id="b", title="B", depends_on=["a"], difficulty=4, difficulty_reason="long"),
            ],
        ),
    )


def test_parents_sit_between_their_children_and_depth_runs_left_to_right():
    layout = tree_layout(_plan())
    assert layout["root"][0] == 0 and layout["a"][0] == 1 and layout["a1"][0] == 2
    assert layout["a1"][1] < layout["a2"][1] < layout["b"][1]
    assert layout["a"][1] == (layout["a1"][1] + layout["a2"][1]) / 2
    assert len({row for _, row in layout.values() if row != layout["root"][1]}) == 4


def test_tree_and_dependency_edges_are_both_drawn_and_distinguishable():
    nodes, edges = plan_frames(_plan(), {"a": "done"})
    kinds = edges.groupby("edge")["kind"].first()
    assert (kinds == "subtask of").sum() == 4
    assert list(kinds[kinds == "uses output of"].index) == ["a->b:uses output of"]
    assert nodes.set_index("id").loc["a", "status"] == "done"
    assert nodes.set_index("id").loc["b", "difficulty"] == "4"
    assert nodes.set_index("id").loc["a1", "difficulty"] == "unrated"


def test_chart_has_a_click_selection_on_node_ids():
    spec = plan_chart(_plan(), colour_by="difficulty", selected="a").to_dict()
    params = spec.get("params", []) + [
        p for layer in spec["layer"] for p in layer.get("params", [])
    ]
    assert [p["name"] for p in params] == [SELECTION]
    assert params[0]["select"]["fields"] == ["id"]


def test_fifty_nodes_stay_readable_one_row_per_leaf_and_short_labels():
    children = [
        Node(
            id=f"n{i}", title=f"A rather long subtask title number {i} that goes on", depends_on=[]
        )
        for i in range(49)
    ]
    plan = Plan(task="big", root=Node(id="root", title="Root", children=children))
    nodes, _ = plan_frames(plan)
    assert len(nodes) == 50
    assert nodes["label"].map(len).max() <= LABEL_CHARS + len("n48: ")
    # No two nodes share a place, and within one column no two share a row.
    assert len(set(zip(nodes["x"], nodes["y"], strict=True))) == 50
    assert nodes[nodes["x"] == 1]["y"].nunique() == 49
    spec = plan_chart(plan).to_dict()
    assert spec["height"] >= 49 * 25


def test_picked_node_reads_streamlit_selection_state():
    assert picked_node({"selection": {SELECTION: [{"id": "a"}]}}) == "a"
    assert picked_node({"selection": {SELECTION: []}}) is None
    assert picked_node(None) is None


def test_a_suspect_node_has_its_own_colour_and_its_reason_in_the_tooltip():
    from app.ui.graph import STATUS_COLOURS

    reason = "echoes the prompt (84% of its words copied)"
    status = {"root": "done", "a": "done", "b": "failed"}
    nodes, _ = plan_frames(_plan(), status, {"a": reason, "b": "ignored: it failed"})
    by_id = nodes.set_index("id")
    assert by_id.loc["a", "status"] == "suspect" and by_id.loc["a", "suspect"] == reason
    assert by_id.loc["root", "status"] == "done" and by_id.loc["b", "status"] == "failed"
    spec = plan_chart(_plan(), status, suspect={"a": reason}).to_dict()
    node_layer = spec["layer"][1]["encoding"]
    assert "suspect" in [t["field"] for t in node_layer["tooltip"]]
    scale = node_layer["color"]["scale"]
    assert STATUS_COLOURS["suspect"] in scale["range"] and "suspect" in scale["domain"]
    assert len(set(STATUS_COLOURS.values())) == len(STATUS_COLOURS)  # distinct colours
