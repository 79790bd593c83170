"""Page layout that holds from 800 px wide up: rows of columns wrap, button labels wrap, the
plan graph scrolls inside its own box, and the sidebar folds away on narrow windows.

Streamlit stacks columns and hides the sidebar only below its mobile breakpoint (768 px). At
800 px (issue 19) the sidebar took 300 px, the rest was split into columns of 100 px, button
labels were cut to "Exp…", and the plan graph, drawn at its natural width, ran over the node
editor and made the whole page scroll sideways. The rules below are plain CSS on Streamlit's
test ids plus one script that folds the sidebar once per tab when the window is narrow (the
analyst can open it again; the script does not fight that).
"""

from __future__ import annotations

import streamlit as st

#: Below this window width the sidebar starts folded and columns of a row wrap.
NARROW_PX = 1000
#: Narrowest a column may get before its row wraps: room for a two-word button label.
COLUMN_MIN_REM = 9
#: Narrowest the plan graph and the node editor may get before they stack.
PLAN_COLUMN_MIN_REM = 24
#: The keyed container around the plan graph and node editor (``st.container(key=...)`` gives
#: it the CSS class ``st-key-<key>``).
PLAN_AREA_KEY = "plan_area"
GRAPH_BOX_KEY = "plan_graph_box"

_STYLE = f"""
<style>
/* Rows of columns wrap instead of squeezing: each column keeps room for its content. */
[data-testid="stHorizontalBlock"] {{ flex-wrap: wrap; }}
[data-testid="stColumn"] {{ min-width: min(100%, {COLUMN_MIN_REM}rem); }}
.st-key-{PLAN_AREA_KEY} [data-testid="stColumn"] {{
    min-width: min(100%, {PLAN_COLUMN_MIN_REM}rem);
}}
/* Button labels wrap onto a second line rather than end in an ellipsis. */
button [data-testid="stMarkdownContainer"],
button [data-testid="stMarkdownContainer"] p {{
    white-space: normal; overflow: visible; text-overflow: clip; overflow-wrap: anywhere;
}}
/* A big plan graph scrolls inside its own box (at most 75% of the window high): it never
   covers the editor, widens the page or pushes the editor out of reach. */
.st-key-{GRAPH_BOX_KEY} {{ overflow: auto; max-width: 100%; max-height: 75vh; }}
[data-testid="stMainBlockContainer"] {{ max-width: 100%; overflow-x: hidden; }}
@media (max-width: {NARROW_PX}px) {{
    [data-testid="stMainBlockContainer"] {{ padding-left: 1rem; padding-right: 1rem; }}
}}
</style>
"""

# Folds the sidebar once per browser tab when the window is narrower than NARROW_PX. It clicks
# Streamlit's own collapse button, so the sidebar's open/closed state stays Streamlit's.
_FOLD_SIDEBAR = f"""
<script>
(() => {{
  const flag = "arbor-sidebar-folded";
  if (window.innerWidth > {NARROW_PX} || sessionStorage.getItem(flag)) return;
  let tries = 0;
  const fold = () => {{
    const sidebar = document.querySelector('[data-testid="stSidebar"]');
    const button = document.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (sidebar && button && sidebar.getAttribute("aria-expanded") !== "false") {{
      button.click();
      sessionStorage.setItem(flag, "1");
    }} else if (tries++ < 40) {{
      setTimeout(fold, 100);
    }}
  }};
  fold();
}})();
</script>
"""


def responsive_layout() -> None:
    """Add the layout rules to the page (once per script run, from ``app/main.py``)."""
    st.html(_STYLE + _FOLD_SIDEBAR, unsafe_allow_javascript=True)
