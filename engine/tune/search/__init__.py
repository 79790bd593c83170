"""Automatic search for each node's model, strategy and token budget under a global cost budget.

AgentTTS (arXiv 2508.00890) observed that in a multi-step task each step may want a different
model and budget, that extra compute has diminishing returns, and that an early step's budget
changes what later steps need. So the per-node choices interact, and the space (options per
node to the power of the number of nodes) is too big to try exhaustively on a dev set. This
module searches it from feedback: each *trial* runs one full assignment on dev examples and
observes accuracy and mean cost per example; the objective is the highest dev accuracy whose
mean cost per example stays within the budget.

Searches here know nothing about how a trial is run: an ``Evaluator`` does that (a real plan
runner, or ``engine.tune.outcome_table.TableEvaluator`` over recorded outcomes). The methods:

* ``coordinate_descent``: from the cheapest assignment, move one node at a time to its best
  option (and, when stuck at the budget, trade one step of cost between two nodes); stops
  when a sweep changes nothing.
* ``successive_halving``: many random affordable-looking assignments on a few examples, the
  better half kept on more examples, until the survivors have seen all of them.
* ``llm_guided_search``: AgentTTS-style: a model reads the trial history and proposes the next
  assignment; unusable proposals become mutations of the best so far.
* ``best_uniform`` (every node the same option) and ``exhaustive``: the baselines.

Every search caches trials, so the same assignment is never run twice on the same examples, and
stops at ``max_trials`` (counted in full-dataset evaluations) or when ``cancel`` is set.

Modules: ``space`` (options, assignments), ``trials`` (results, comparison, the shared trial
cache), one per method (``coordinate``, ``halving``, ``llm_guided``, ``baselines``).
"""

from engine.tune.search.baselines import best_uniform, exhaustive, random_search
from engine.tune.search.coordinate import coordinate_descent
from engine.tune.search.halving import (
    ESTIMATE_SLACK,
    MAX_HALVING_ROUNDS,
    MIN_FIRST_ROUND,
    SUBSET_COST_SLACK,
    successive_halving,
)
from engine.tune.search.llm_guided import (
    MAX_REASON_CHARS,
    PROMPT_TOKEN_BUDGET,
    PROPOSAL_MAX_TOKENS,
    PROPOSAL_TEMPERATURE,
    SEARCH_INSTRUCTIONS,
    llm_guided_search,
    parse_proposal,
    proposal_messages,
    proposal_prompt,
    proposal_schema,
)
from engine.tune.search.space import Assignment, NodeOption, SearchSpace, strategy_short_label
from engine.tune.search.trials import (
    COST_TOLERANCE,
    Evaluator,
    SearchResult,
    TrialCallback,
    TrialResult,
    is_better,
    merge_trials,
)

__all__ = [
    "COST_TOLERANCE",
    "ESTIMATE_SLACK",
    "MAX_HALVING_ROUNDS",
    "MAX_REASON_CHARS",
    "MIN_FIRST_ROUND",
    "PROMPT_TOKEN_BUDGET",
    "PROPOSAL_MAX_TOKENS",
    "PROPOSAL_TEMPERATURE",
    "SEARCH_INSTRUCTIONS",
    "SUBSET_COST_SLACK",
    "Assignment",
    "Evaluator",
    "NodeOption",
    "SearchResult",
    "SearchSpace",
    "TrialCallback",
    "TrialResult",
    "best_uniform",
    "coordinate_descent",
    "exhaustive",
    "is_better",
    "llm_guided_search",
    "merge_trials",
    "parse_proposal",
    "proposal_messages",
    "proposal_prompt",
    "proposal_schema",
    "random_search",
    "strategy_short_label",
    "successive_halving",
]
