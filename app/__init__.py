"""Arbor's application layer: two presenters over one service layer.

    app.ui         the Streamlit pages (``app/main.py`` is the router ``streamlit run`` starts)
    app.cli        the command line (``run.py`` / the ``arbor`` script): argparse, one module
                   per command group
    app.services   the workflows both presenters use: evaluation and search set-up, background
                   jobs, the options offered; it imports no Streamlit and prints nothing

Below them, ``engine`` and ``storage`` never import Streamlit either.
"""
