"""The Streamlit presenter: the pages ``app/main.py`` routes to and the panels, charts and
widgets they share.

Pages read per-session state (``state``), call ``app.services``, ``engine`` and ``storage``,
and render what comes back; long work runs in ``app.services.jobs`` threads that never touch
Streamlit. Only this package (and ``app/main.py``) imports Streamlit.
"""
