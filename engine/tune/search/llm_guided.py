"""LLM-guided search (AgentTTS): a model reads the trial history and proposes the next assignment;
unusable proposals become mutations of the best so far. The standing instructions are
``assets/prompts/search_proposal.md``, the request ``assets/prompts/search_proposal_user.md``."""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Callable, Sequence
from string import Template
from typing import Any

from engine.models.base import Backend, ChatMessage
from engine.plan.model_settings import GenerationConfig
from engine.prompts import as_user_turn, load_prompt
from engine.tune.search.space import Assignment, SearchSpace
from engine.tune.search.trials import (
    Evaluator,
    SearchResult,
    SearchStopped,
    TrialCallback,
    TrialLog,
    TrialResult,
    best_of,
    ranked,
)

#: Output tokens of one proposal call: an assignment and a short reason fit comfortably.
PROPOSAL_MAX_TOKENS = 160
#: The prompt (space, insights, history) is kept under about this many tokens.
PROMPT_TOKEN_BUDGET = 1500
PROPOSAL_TEMPERATURE = 0.7
MAX_REASON_CHARS = 200

#: The standing instructions of every proposal call (AgentTTS's three observations).
SEARCH_INSTRUCTIONS = load_prompt("search_proposal")
#: Where the history goes in ``search_proposal_user.md``: a line of its own, between the options
#: and the closing request, which are counted before history lines are added.
_TRIALS_SLOT = "\n$trials\n\n"


def _option_lines(space: SearchSpace) -> list[str]:
    lines = []
    for node, options in space.options.items():
        choices = "; ".join(f"{i} = {option.label}" for i, option in enumerate(options))
        lines.append(f"- {node}: {choices}")
    return lines


def _trial_line(trial: TrialResult, budget: float) -> str:
    verdict = "within budget" if trial.feasible(budget) else "OVER budget"
    assignment = json.dumps(trial.assignment, separators=(",", ":"))
    return f"{assignment} -> accuracy {trial.accuracy:.3f}, cost {trial.cost:.6g} ({verdict})"


def proposal_prompt(
    space: SearchSpace,
    history: Sequence[TrialResult],
    budget: float,
    *,
    count_tokens: Callable[[str], int] | None = None,
    token_budget: int = PROMPT_TOKEN_BUDGET,
) -> str:
    """The request for the next assignment: options, budget and the history, best first.

    History lines are dropped from the worst end until the prompt fits ``token_budget``
    (counted with ``count_tokens``, default about 3 characters per token).
    """
    count = count_tokens or (lambda text: max(1, len(text) // 3))
    head, tail = _request_template()
    head = Template(head).safe_substitute(
        budget=f"{budget:.6g}", options="\n".join(_option_lines(space))
    )
    used = count(head) + count(tail) + 16
    lines: list[str] = []
    best_first = ranked(list(history), budget)
    for trial in best_first:
        line = _trial_line(trial, budget)
        cost = count(line) + 1
        if used + cost > token_budget:
            break
        lines.append(line)
        used += cost
    if len(lines) < len(best_first):
        lines.append(f"({len(best_first) - len(lines)} worse trials not shown)")
    if not lines:
        lines.append("(none yet)")
    return "\n".join([head, *lines, "", tail])


def proposal_messages(
    space: SearchSpace,
    history: Sequence[TrialResult],
    budget: float,
    *,
    count_tokens: Callable[[str], int] | None = None,
) -> list[ChatMessage]:
    """The messages of one proposal call: the instructions and ``proposal_prompt``."""
    prompt = proposal_prompt(space, history, budget, count_tokens=count_tokens)
    return as_user_turn(SEARCH_INSTRUCTIONS, prompt)


def _request_template() -> tuple[str, str]:
    """``search_proposal_user.md`` cut at its ``$trials`` line: (head template, closing text)."""
    template = load_prompt("search_proposal_user")
    head, slot, tail = template.partition(_TRIALS_SLOT)
    if not slot:
        raise ValueError("search_proposal_user.md needs $trials on a line of its own")
    return head, Template(tail).safe_substitute()


def proposal_schema(space: SearchSpace) -> dict[str, Any]:
    """JSON schema of a proposal: every node an integer index in range, and a short reason.

    ``enum`` repeats ``minimum``/``maximum`` because llama-cpp-python's grammar builder ignores
    the bounds; the enum is what actually keeps a local model's indices in range.
    """
    properties = {
        node: {
            "type": "integer",
            "minimum": 0,
            "maximum": len(options) - 1,
            "enum": list(range(len(options))),
        }
        for node, options in space.options.items()
    }
    return {
        "type": "object",
        "properties": {
            "assignment": {
                "type": "object",
                "properties": properties,
                "required": space.nodes,
                "additionalProperties": False,
            },
            "reason": {"type": "string", "maxLength": MAX_REASON_CHARS},
        },
        "required": ["assignment"],
    }


_ASSIGNMENT_OBJECT = re.compile(r'"assignment"\s*:\s*(\{[^{}]*\})')


def parse_proposal(text: str, space: SearchSpace) -> tuple[Assignment, str]:
    """The proposed assignment and reason; ValueError saying why the text is unusable.

    An answer cut off inside its reason still yields its assignment.
    """
    try:
        payload = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        match = _ASSIGNMENT_OBJECT.search(text)
        if match is None:
            raise ValueError(f"not JSON ({exc.msg} at char {exc.pos})") from exc
        try:
            payload = {"assignment": json.loads(match.group(1))}
        except json.JSONDecodeError:
            raise ValueError(f"not JSON ({exc.msg} at char {exc.pos})") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("assignment"), dict):
        raise ValueError("no 'assignment' object")
    reason = payload.get("reason")
    reason = " ".join(reason.split())[:MAX_REASON_CHARS] if isinstance(reason, str) else ""
    return space.check(payload["assignment"]), reason


def _mutation(
    space: SearchSpace, base: Assignment, trials: TrialLog, rng: random.Random
) -> Assignment | None:
    """``base`` with one node changed to another option, untried if possible.

    When every one-node change of ``base`` has been tried, a random untried assignment; None
    when the whole space has been tried.
    """
    moves = [
        {**base, node: index}
        for node, options in space.options.items()
        for index in range(len(options))
        if index != base[node]
    ]
    untried = [move for move in moves if not trials.tried(move)]
    if untried:
        return rng.choice(untried)
    if space.size <= 100_000:
        rest = [a for a in space.all_assignments() if not trials.tried(a)]
        return rng.choice(rest) if rest else None
    for _ in range(1000):
        key = tuple(rng.randrange(len(opts)) for opts in space.options.values())
        if not trials.tried(space.from_key(key)):
            return space.from_key(key)
    return None


def llm_guided_search(
    space: SearchSpace,
    evaluator: Evaluator,
    *,
    budget: float,
    max_trials: int,
    backend: Backend,
    on_trial: TrialCallback | None = None,
    cancel: threading.Event | None = None,
    seed: int = 0,
) -> SearchResult:
    """AgentTTS-style search: a model proposes each next assignment from the trial history.

    Starts with the cheapest assignment. Each round the model sees the options, the budget,
    the history (best first, cut to fit about ``PROMPT_TOKEN_BUDGET`` tokens) and AgentTTS's
    three observations, and answers JSON under ``proposal_schema``. A proposal that is not
    JSON, is out of range or was already tried, and a model call that raises, become a
    mutation of the best assignment so far; the trial's note says which and why. Each round is
    one evaluation, so the model is called at most ``max_trials - 1`` times.
    """
    trials = TrialLog(space, evaluator, budget, max_trials, on_trial, cancel)
    rng = random.Random(seed)
    schema = proposal_schema(space)

    def count_tokens(text: str) -> int:
        try:
            return backend.count_tokens(text)
        except Exception:  # a tokenizer that cannot load must not end the search
            return max(1, len(text) // 3)

    try:
        trials.evaluate(space.cheapest(), note="start: cheapest")
        round_number = 0
        while True:
            if trials.cancel is not None and trials.cancel.is_set():
                raise SearchStopped("cancelled")
            if not trials.can_afford():
                raise SearchStopped("max_trials")
            if len(trials.trials) >= space.size:
                raise SearchStopped("space exhausted")
            round_number += 1
            messages = proposal_messages(space, trials.trials, budget, count_tokens=count_tokens)
            config = GenerationConfig(
                temperature=PROPOSAL_TEMPERATURE,
                max_tokens=PROPOSAL_MAX_TOKENS,
                seed=seed * 1000 + round_number,
            )
            problem = ""
            proposal: Assignment | None = None
            reason = ""
            try:
                completion = backend.complete(
                    messages, config, json_schema=schema, cancel=trials.cancel
                )
            except Exception as exc:  # the model failing must not end the search
                problem = f"model error: {type(exc).__name__}: {exc}"
            else:
                try:
                    proposal, reason = parse_proposal(completion.text, space)
                except ValueError as exc:
                    problem = f"proposal invalid: {exc}"
            if proposal is not None and trials.tried(proposal):
                problem = f"proposal already tried: {json.dumps(proposal)}"
                proposal = None
            if proposal is not None:
                note = "llm proposal" + (f": {reason}" if reason else "")
                trials.evaluate(proposal, note=note[:300])
                continue
            best = trials.best() or best_of(trials.trials, budget)
            base = dict(best.assignment) if best is not None else space.cheapest()
            mutation = _mutation(space, base, trials, rng)
            if mutation is None:
                raise SearchStopped("space exhausted")
            trials.evaluate(mutation, note=f"fallback: {problem}; mutated the best so far"[:300])
    except SearchStopped as stop:
        return trials.result("llm-guided", stop.reason)


__all__ = [
    "SEARCH_INSTRUCTIONS",
    "llm_guided_search",
    "parse_proposal",
    "proposal_messages",
    "proposal_prompt",
    "proposal_schema",
]
