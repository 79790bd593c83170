"""Result tables people read: chosen columns in a chosen order under human names, empty cells
instead of "None", local times without "+00:00", durations in seconds, long text wrapped.

Trace rows come from DuckDB with UTC timestamps and every column of the schema; a table on a
page shows what answers the analyst's question first (status, tokens, seconds) and keeps the
long text (outputs, errors) last, where it may wrap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

#: Columns whose text may be long: shown last and wrapped in the table's cells.
LONG_TEXT_WIDTH = "large"


def local_time(value: object) -> str:
    """A timestamp as the server's local wall-clock time, seconds precision, no offset."""
    if not isinstance(value, datetime):
        return "" if value is None else str(value)
    if value.tzinfo is not None:
        value = value.astimezone()  # the server's zone; the UI listens on localhost
    return value.strftime("%Y-%m-%d %H:%M:%S")


def seconds_between(start: object, end: object) -> float | None:
    if isinstance(start, datetime) and isinstance(end, datetime):
        return round((end - start).total_seconds(), 2)
    return None


def readable_frame(rows: Iterable[Mapping[str, Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    """``rows`` with only ``columns`` (field -> heading), in that order; times local, None empty.

    A field missing from a row is an empty cell, so older trace rows still display.
    """
    records = []
    for row in rows:
        record: dict[str, Any] = {}
        for field, heading in columns.items():
            value = row.get(field)
            if isinstance(value, datetime):
                value = local_time(value)
            record[heading] = value
        records.append(record)
    frame = pd.DataFrame(records, columns=list(columns.values()))
    # Text columns: an empty string rather than "None"; numbers keep NaN, drawn as an empty cell.
    for heading in frame.columns:
        if frame[heading].dtype == object:
            frame[heading] = frame[heading].where(frame[heading].notna(), "")
    return frame


def show_table(
    frame: pd.DataFrame, *, long_text: Iterable[str] = (), key: str | None = None
) -> None:
    """``st.dataframe`` with ``long_text`` headings given wide, wrapping text columns."""
    config = {
        heading: st.column_config.TextColumn(heading, width=LONG_TEXT_WIDTH)
        for heading in long_text
        if heading in frame.columns
    }
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config=config,
        key=key,
        row_height=60 if config else None,
        placeholder="",  # a missing value is an empty cell, never the word "None"
    )
