"""Helpers for Streamlit AppTest pages."""

from __future__ import annotations

from typing import Any


def choice(at: Any, key: str) -> Any:
    """The selectbox drawn by ``app.ui.widgets.choice_box(key=key)``.

    Its widget key carries a digest of its option labels, so tests find it by the prefix.
    """
    boxes = [box for box in at.selectbox if str(box.key).startswith(f"{key}__")]
    assert len(boxes) == 1, f"expected one choice box {key!r}, found {len(boxes)}"
    return boxes[0]


def notices(at: Any) -> list[str]:
    """Every message the page showed: inline alerts and toasts."""
    found = [e.value for e in at.error] + [w.value for w in at.warning]
    found += [s.value for s in at.success] + [i.value for i in at.info]
    return found + [t.value for t in at.toast]
