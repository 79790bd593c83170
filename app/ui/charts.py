"""Altair charts of a run, built from trace-store rows."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd


def tokens_per_node(nodes: list[dict[str, Any]]) -> alt.Chart:
    """Stacked input/output tokens per node, so the expensive steps stand out."""
    frame = pd.DataFrame(nodes)
    long = frame.melt(
        id_vars=["node_id", "title"],
        value_vars=["input_tokens", "output_tokens"],
        var_name="kind",
        value_name="tokens",
    )
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y("node_id:N", title="node", sort=None),
            x=alt.X("tokens:Q", title="tokens", stack="zero"),
            color=alt.Color("kind:N", title=None),
            tooltip=["node_id", "title", "kind", "tokens"],
        )
        .properties(height=alt.Step(22))
    )
