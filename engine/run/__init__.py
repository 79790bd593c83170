"""Running a plan: the pure scheduler, the executor that submits ready nodes, one node's model
calls, test-time strategies (best-of-N, self-consistency, self-refine), budget allocation
policies and caps, the call cache, and the events a run emits.

Where to look: ``scheduler.py`` (ready/running/done, no IO), ``executor.py`` (the run loop),
``node_runner.py`` (preparing and running one node), ``recording.py`` (events and results),
``strategies.py`` (the wrappers around one call), ``allocation.py`` (budget policies),
``allowances.py`` (each node's share of what the run has left, pure), ``budget.py`` (caps and
meters), ``events.py`` (what the trace writer, UI and CLI consume).
"""
