"""Arbor's command line; the commands live in ``app/cli/`` (one module per group).

python run.py                     launch the UI on http://127.0.0.1:8501
python run.py run FILE            run a saved plan or session file headless
python run.py decompose "TASK"    print a plan for TASK as JSON
python run.py expand FILE NODE    split a node of a plan file with the planner (--replan)
python run.py rate FILE           rate the difficulty of a plan's unrated nodes
python run.py export FILE         print a plan (JSON or YAML file) as JSON or YAML
python run.py sessions            saved sessions (list, search, rename, duplicate, delete)
python run.py export-session ID -o FILE   one session and its runs as a portable .arbor file
python run.py import-session FILE import an .arbor file (or a JSON session or plan file)
python run.py runs                recent runs (interrupted ones flagged)
python run.py resume RUN_ID       continue an interrupted run, reusing its finished calls
python run.py models              the model registry (list, add-local, add-remote, remove, test)
python run.py allocate FILE       per-node budget allocation (policy, strategy, caps)
python run.py eval FILE DATASET   accuracy, tokens, cost, cost-of-pass, Pareto frontier
python run.py search FILE DATASET model + strategy + budget per node under a budget, on a dev set
"""

from __future__ import annotations

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
