"""The planner: a model splits a task into a plan (decompose), splits or re-plans one node
(expand), samples alternative plans, and rates each node's difficulty.

Prompts come from ``assets/prompts/`` through ``engine.prompts``; model calls go through
``engine.models``. The planner never runs a plan (that is ``engine.run``).
"""
