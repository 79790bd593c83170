"""Tuning a plan: datasets, evaluation of configurations (accuracy, tokens, cost,
cost-of-pass), and the search for a model and budget per node (coordinate descent, successive
halving, LLM-guided), on live runs or on a recorded outcome table.
"""
