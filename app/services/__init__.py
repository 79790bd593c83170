"""The workflows the UI and the CLI share, so both presenters do the same thing the same way.

    tuning     datasets, pools, configurations, search spaces; running an evaluation or a
               search and saving its report (a search's trials with the search id and number)
    planning   planner actions (decompose, expand, re-plan, rate, alternatives), each recorded
               in the trace store as a run of its kind with every call and candidate plan
    jobs       background plan runs, evaluations and searches with progress records to poll
    choices    the options offered (strategy kinds, policies, checkers, formats), taken from
               the typed models' Literal types

Nothing here imports Streamlit or prints: presenters decide how to show results.
"""
