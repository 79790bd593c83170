"""Tuning a plan: datasets, evaluation of configurations (accuracy, tokens, cost,
cost-of-pass), and the search for a model and budget per node (coordinate descent, successive
halving, LLM-guided), on live runs or on a recorded outcome table.

Where to look: ``datasets.py``, ``checking.py`` (answer checkers), ``runners.py`` (plan jobs and
runners), ``metrics.py`` (accuracy, cost-of-pass, frontier), ``evaluation.py`` (``evaluate``,
re-exporting the others), ``search/`` (one module per search method), ``dev_search.py`` (the
searches on real runs), ``outcome_table.py`` (on recorded outcomes).
"""
