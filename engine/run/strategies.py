"""Test-time strategies: single call, best-of-N, self-consistency vote, self-refine.

Each strategy wraps the single-call executor (``NodeCalls``), which owns budgets, caching and
tracing, so a strategy is only the decision of which calls to make and how to combine their
answers (DSPy's ``BestOfN``/``Refine`` are modules around a module in the same way). Every call a
strategy makes is recorded with its role, and sampling strategies mark each sample's score,
vote and whether it was selected, so the trace shows how the node's answer came about.

Research behind each: self-consistency votes over sampled answers (Wang et al.); adaptive
consistency stops sampling once the vote is settled, here with the Beta-posterior rule of
Aggarwal et al. (stop when P(leader's share > runner-up's) >= confidence); best-of-N picks by
a verifier or judge; self-refine alternates critique and revision (Madaan et al.).
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.checks import (
    answer_key,
    expression_score,
    extract_number,
    json_schema_passes,
    regex_passes,
)
from engine.errors import CallCancelled
from engine.models.base import ChatMessage
from engine.models.model_kind import kind_of
from engine.output_check import OutputProblem, check_output, disqualified
from engine.plan.compute_config import SelectorConfig, StrategyConfig
from engine.prompts import few_shot, fill, load_prompt, merge_stops
from engine.run.node_calls import Caller, CallRecord, NodeBudgetExhausted, NodeCalls

#: Task text shown to a judge or critic is cut to this many characters.
MAX_TASK_CHARS = 2000
JUDGE_MAX_TOKENS = 24
CRITIQUE_MAX_TOKENS = 96
SCORE_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
    "required": ["score"],
}
CRITIQUE_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "problems": {"type": "string", "maxLength": 300}},
    "required": ["ok", "problems"],
}


@dataclass
class StrategyResult:
    """A node's answer and how it was reached."""

    output: str
    samples: int | None = None
    agreement: float | None = None
    note: str | None = None
    #: The run halted (time cap or cancel) before the strategy was done; ``output`` is the
    #: best answer among the calls that finished.
    interrupted: bool = False


def _task_text(messages: list[ChatMessage]) -> str:
    text = messages[-1]["content"].strip()
    return text if len(text) <= MAX_TASK_CHARS else text[:MAX_TASK_CHARS] + " [...]"


#: An answer shown to a base model's judge or critic is cut to this many characters.
MAX_BASE_ANSWER_CHARS = 600


def _base_question(prompt: str) -> str:
    """The real input of a few-shot prompt (its last block, labels removed)."""
    block = prompt.strip().rsplit("\n\n", 1)[-1]
    lines = block.split("\n")
    if len(lines) > 1 and lines[-1].rstrip().endswith(":"):
        lines = lines[:-1]  # the output label the model was to continue
    first, _, rest = lines[0].partition(": ")
    lines[0] = rest if rest and len(first) <= 40 else lines[0]
    return "\n".join(lines).strip()


def _node_task(calls: NodeCalls, messages: list[ChatMessage]) -> str:
    """The node's question for a judge or critic: a base prompt's input, else the message."""
    if calls.config.prompt_format == "base":
        text = _base_question(messages[-1]["content"])
        return text if len(text) <= MAX_TASK_CHARS else text[:MAX_TASK_CHARS] + " [...]"
    return _task_text(messages)


def call_style(caller: Caller, node_format: str) -> str:
    """How ``caller``'s judge, critique and revise prompts are written: "base" or "chat".

    The caller's own resolved style wins (a judge model of another kind); else the node's
    resolved ``prompt_format``; a raw "completion" node asks the model's kind.
    """
    style = caller.style or node_format
    if style in ("base", "chat"):
        return style
    return "base" if kind_of(caller.ref, caller.backend.declared_kind).kind == "base" else "chat"


def _base_turn(name: str, text: str) -> tuple[list[ChatMessage], list[str]]:
    prompt, stops = few_shot(name, text)
    return [{"role": "user", "content": prompt}], stops


def _short(answer: str) -> str:
    answer = answer.strip()
    if len(answer) <= MAX_BASE_ANSWER_CHARS:
        return answer
    return answer[:MAX_BASE_ANSWER_CHARS] + " [...]"


def _usable(records: list[CallRecord]) -> list[CallRecord]:
    return [r for r in records if r.ok and r.output.strip()]


def _skipped_note(skipped: int, usable: int) -> str:
    return f"{skipped} of {usable} samples skipped by the output check (echo, loop or empty)"


def vote_keys(records: list[CallRecord], vote_on: str) -> list[str]:
    """The key each record votes for; "auto" compares numbers if every sample has one."""
    numbers = vote_on == "auto" and all(extract_number(r.output) is not None for r in records)
    return [answer_key(r.output, vote_on, numbers_everywhere=numbers) for r in records]  # type: ignore[arg-type]


def leader_probability(leader: int, runner_up: int) -> float:
    """P(the leader's true share exceeds the runner-up's) under a uniform Beta prior.

    For X ~ Beta(a, b) with integers, P(X > 1/2) = P(Binomial(a + b - 1, 1/2) < a), so no
    special functions are needed. ``a = leader + 1``, ``b = runner_up + 1``.
    """
    a, b = leader + 1, runner_up + 1
    n = a + b - 1
    return sum(math.comb(n, k) for k in range(a)) / 2**n


def vote_settled(
    counts: Counter[str], drawn: int, most: int, confidence: float
) -> tuple[bool, str]:
    """Whether more samples could still change the winner enough to matter, and why not."""
    ranked = counts.most_common(2)
    if not ranked:
        return False, ""
    leader = ranked[0][1]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0
    remaining = most - drawn
    if leader - runner_up > remaining:
        return True, f"the leader cannot be caught with {remaining} sample(s) left"
    probability = leader_probability(leader, runner_up)
    if probability >= confidence:
        return True, f"P(leader wins) = {probability:.3f} ≥ {confidence:.2f}"
    return False, ""


class Strategy(ABC):
    """Produces a node's answer from calls made through ``NodeCalls``."""

    #: The node's output check (``engine.output_check``: text, finish reason -> problems), set
    #: by the node runner so it knows the prompt without upstream outputs; None: the check runs
    #: against the messages as they are.
    output_check: Callable[[str, str | None], list[OutputProblem]] | None = None

    def __init__(self, config: StrategyConfig):
        self.config = config

    def _clean(
        self, usable: list[CallRecord], messages: Sequence[ChatMessage]
    ) -> tuple[list[CallRecord], int]:
        """The samples the output check does not disqualify (an echo, a loop, empty), and how
        many it did; all of ``usable`` when none is clean (something must still be chosen)."""
        check = self.output_check
        if check is None:
            prompt = "\n\n".join(str(m.get("content") or "") for m in messages)

            def check(text: str, finish: str | None) -> list[OutputProblem]:
                return check_output(text, prompt=prompt, finish_reason=finish)

        clean = [r for r in usable if not disqualified(check(r.output, r.finish_reason))]
        if not clean:
            return usable, 0
        return clean, len(usable) - len(clean)

    @abstractmethod
    def run(self, calls: NodeCalls, messages: list[ChatMessage]) -> StrategyResult: ...

    @staticmethod
    def _agreement(records: list[CallRecord], vote_on: str) -> float | None:
        usable = _usable(records)
        keys = [k for k in vote_keys(usable, vote_on) if k]
        if not keys:
            return None
        return Counter(keys).most_common(1)[0][1] / len(usable)


class SingleCall(Strategy):
    def run(self, calls: NodeCalls, messages: list[ChatMessage]) -> StrategyResult:
        record = calls.call(messages, role="answer", keep_seed=True)
        record.selected = True
        return StrategyResult(record.output)


class BestOfN(Strategy):
    """N samples, each scored by a check or a judge; the best score wins, earliest on ties."""

    def __init__(self, config: StrategyConfig, judge: Caller | None = None):
        super().__init__(config)
        self.judge = judge

    def run(self, calls: NodeCalls, messages: list[ChatMessage]) -> StrategyResult:
        notes: list[str] = []
        interrupted = False
        records = calls.samples(messages, self.config.samples, temperature=self.config.temperature)
        if len(records) < self.config.samples:
            notes.append(f"node budget allowed {len(records)} of {self.config.samples} samples")
        usable = _usable(records)
        if not usable:
            return StrategyResult("", len(records), None, "; ".join(notes) or None)
        # Samples that echo the prompt, loop or are empty lose to any clean one (unscored).
        candidates, skipped = self._clean(usable, messages)
        if skipped:
            notes.append(f"{_skipped_note(skipped, len(usable))}; not scored")
        try:
            self._score(calls, messages, candidates, notes)
        except CallCancelled:
            interrupted = True
            notes.append("halted while scoring; unscored samples were not chosen")
        scored = [r for r in candidates if r.score is not None]
        pool = scored or candidates
        best = max(pool, key=lambda r: (r.score or 0.0, -r.sample_index))
        best.selected = True
        for record in records:
            if record is not best:
                record.selected = False
        for record, key in zip(usable, vote_keys(usable, "auto"), strict=True):
            record.vote = key or None
        return StrategyResult(
            best.output,
            len(records),
            self._agreement(records, "auto"),
            "; ".join(notes) or None,
            interrupted,
        )

    def _score(
        self,
        calls: NodeCalls,
        messages: list[ChatMessage],
        usable: list[CallRecord],
        notes: list[str],
    ) -> None:
        selector = self.config.selector
        if selector.kind != "judge":
            check = selector_check(selector)
            for record in usable:
                record.score = check(record.output)
            return
        judge = self.judge or calls.caller
        task = _node_task(calls, messages)
        style = call_style(judge, calls.config.prompt_format)
        instructions = load_prompt("judge_score")
        for record in usable:
            stops: list[str] = []
            if style == "base":
                # A base model cannot follow the JSON instruction: a few-shot "Score:" prompt.
                judge_messages, stops = _base_turn(
                    "judge", f"{task}\nProposed answer: {_short(record.output)}"
                )
            else:
                user = fill("judge_score_user", task=task, answer=record.output.strip())
                judge_messages = [{"role": "user", "content": f"{instructions}\n\n{user}"}]
            try:
                verdict = calls.call(
                    judge_messages,
                    role="judge",
                    sample_index=record.sample_index,
                    temperature=0.0,
                    max_tokens=JUDGE_MAX_TOKENS,
                    json_schema=SCORE_SCHEMA if style == "chat" else None,
                    caller=judge,
                    seed=0,
                    prompt_format=style,
                    stop=stops if style == "base" else None,
                )
            except NodeBudgetExhausted:
                notes.append("node budget ran out while judging; unjudged samples not chosen")
                return
            record.score = parse_score(verdict.output)
            verdict.score = record.score


def parse_score(text: str) -> float | None:
    """A judge's 0-10 score from its JSON (or the first number it wrote), clamped."""
    try:
        value = json.loads(text).get("score")
    except (ValueError, AttributeError):
        value = extract_number(text)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return float(min(10.0, max(0.0, value)))


def selector_check(selector: SelectorConfig) -> Callable[[str], float]:
    """The analyst's check as a scoring function: 1/0 for regex and schema, the value for an
    expression. Errors in the check itself raise ``CheckError`` (caught at edit time too)."""
    if selector.kind == "regex":
        pattern = selector.pattern or ""
        return lambda text: 1.0 if regex_passes(pattern, text) else 0.0
    if selector.kind == "json_schema":
        schema = selector.json_schema or ""
        return lambda text: 1.0 if json_schema_passes(schema, text)[0] else 0.0
    expression = selector.expression or ""
    return lambda text: expression_score(expression, text)


class SelfConsistency(Strategy):
    """Majority vote over sampled answers, stopping early once the vote is settled."""

    #: The node's messages, for the output check of the samples (set by ``run``).
    _messages: tuple[ChatMessage, ...] | list[ChatMessage] = ()

    def run(self, calls: NodeCalls, messages: list[ChatMessage]) -> StrategyResult:
        self._messages = messages
        config = self.config
        most = config.samples
        first = min(config.min_samples, most) if config.early_stop else most
        notes: list[str] = []
        interrupted = False
        records = calls.samples(messages, first, temperature=config.temperature)
        if len(records) < first:
            notes.append(f"node budget allowed {len(records)} of {most} samples")
        while config.early_stop and len(records) < most and len(records) == first:
            settled, why = vote_settled(
                self._counts(records), len(records), most, config.confidence
            )
            if settled:
                notes.append(f"stopped after {len(records)} of {most} samples: {why}")
                break
            try:
                more = calls.samples(
                    messages, 1, first_index=len(records), temperature=config.temperature
                )
            except NodeBudgetExhausted:
                notes.append(f"node budget allowed {len(records)} of {most} samples")
                break
            except CallCancelled:
                interrupted = True
                notes.append(f"halted after {len(records)} of {most} samples")
                break
            records.extend(more)
            first = len(records)
        return self._decide(records, notes, interrupted)

    def _counts(self, records: list[CallRecord]) -> Counter[str]:
        usable, _ = self._clean(_usable(records), self._messages)
        return Counter(k for k in vote_keys(usable, self.config.vote_on) if k)

    def _decide(
        self, records: list[CallRecord], notes: list[str], interrupted: bool
    ) -> StrategyResult:
        usable = _usable(records)
        keys = vote_keys(usable, self.config.vote_on)
        for record, key in zip(usable, keys, strict=True):
            record.vote = key or None
            record.selected = False
        # Samples that echo the prompt, loop or are empty keep their recorded vote but it is
        # not counted while clean samples exist.
        clean, skipped = self._clean(usable, self._messages)
        if skipped:
            notes.append(f"{_skipped_note(skipped, len(usable))}; their votes not counted")
            kept = {id(r) for r in clean}
            pairs = [(r, k) for r, k in zip(usable, keys, strict=True) if id(r) in kept]
            usable, keys = [r for r, _ in pairs], [k for _, k in pairs]
        counts = Counter(k for k in keys if k)
        if not counts:
            if usable:
                usable[0].selected = True
                notes.append("no sample gave a comparable answer; the first was kept")
                return StrategyResult(
                    usable[0].output, len(records), None, "; ".join(notes), interrupted
                )
            return StrategyResult("", len(records), None, "; ".join(notes) or None, interrupted)
        winner, votes = counts.most_common(1)[0]
        chosen = next(r for r, k in zip(usable, keys, strict=True) if k == winner)
        chosen.selected = True
        agreement = votes / len(usable)
        return StrategyResult(
            chosen.output, len(records), agreement, "; ".join(notes) or None, interrupted
        )


class SelfRefine(Strategy):
    """An answer, then up to k rounds of critique and revision; stops when the critic is
    satisfied. Each version of the answer is a traced call."""

    def run(self, calls: NodeCalls, messages: list[ChatMessage]) -> StrategyResult:
        current = calls.call(messages, role="answer", keep_seed=True)
        versions = [current]
        notes: list[str] = []
        interrupted = False
        task = _node_task(calls, messages)
        style = call_style(calls.caller, calls.config.prompt_format)
        base = style == "base"
        for round_index in range(self.config.refine_rounds):
            if not current.output.strip():
                break
            answer = current.output.strip()
            try:
                critique_turn, critique_stops = _turn(
                    "refine_critique", style, base_input=f"{task}\nProposed answer: {answer}",
                    task=task, answer=answer,
                )  # fmt: skip
                critique = calls.call(
                    critique_turn,
                    role="critique",
                    sample_index=round_index,
                    temperature=0.0,
                    max_tokens=CRITIQUE_MAX_TOKENS,
                    json_schema=None if base else CRITIQUE_SCHEMA,
                    seed=0,
                    prompt_format=style,
                    stop=critique_stops,
                )
                ok, problems = (
                    parse_base_critique(critique.output)
                    if base
                    else parse_critique(critique.output)
                )
                if ok:
                    notes.append(f"critic found no problems in round {round_index + 1}")
                    break
                problems = problems or "(unspecified)"
                revise_turn, revise_stops = _turn(
                    "refine_revise", style,
                    base_input=f"{task}\nProposed answer: {answer}\nProblem: {problems}",
                    task=task, answer=answer, problems=problems,
                )  # fmt: skip
                revised = calls.call(
                    revise_turn,
                    role="revise",
                    sample_index=round_index,
                    keep_seed=True,
                    prompt_format=style,
                    stop=merge_stops(calls.config.stop, revise_stops or []) if base else None,
                )
            except NodeBudgetExhausted:
                notes.append(f"node budget ran out in round {round_index + 1}")
                break
            except CallCancelled:
                interrupted = True
                notes.append(f"halted in round {round_index + 1}")
                break
            if revised.output.strip():
                current = revised
                versions.append(revised)
        else:
            notes.append(f"{self.config.refine_rounds} round(s) of critique and revision")
        for version in versions:
            version.selected = version is current
        return StrategyResult(
            current.output, len(versions), None, "; ".join(notes) or None, interrupted
        )


#: The few-shot prompt (``assets/prompts/base/``) standing for each chat prompt.
BASE_PROMPT_FOR = {"refine_critique": "critique", "refine_revise": "revise"}


def _turn(
    prompt: str, style: str = "chat", *, base_input: str = "", **values: str
) -> tuple[list[ChatMessage], list[str] | None]:
    """A critique or revise call's messages and stop strings (None: the node's own).

    ``chat``: the instructions and the filled ``<prompt>_user`` text as one user turn; ``base``:
    the few-shot prompt for ``base_input``, with that prompt's stops.
    """
    if style == "base":
        return _base_turn(BASE_PROMPT_FOR[prompt], _short(base_input))
    user = fill(prompt + "_user", **values)
    return [{"role": "user", "content": f"{load_prompt(prompt)}\n\n{user}"}], None


def parse_critique(text: str) -> tuple[bool, str]:
    """(satisfied, problems) from the critic's JSON; unparseable means "not satisfied"."""
    try:
        payload = json.loads(text)
        return bool(payload.get("ok")), str(payload.get("problems") or "").strip()
    except (ValueError, AttributeError):
        return False, text.strip()[:300]


def parse_base_critique(text: str) -> tuple[bool, str]:
    """(satisfied, problem) from a base model's review: "OK" (any case) means satisfied."""
    review = text.strip()
    if re.match(r"^ok\b", review, re.IGNORECASE) or not review:
        return bool(review), "" if review else "the critic gave no review"
    return False, review[:300]


def strategy_for(config: StrategyConfig, judge: Caller | None = None) -> Strategy:
    """The strategy object for ``config``; ``judge`` is best-of-N's judge model, if not the
    node's own."""
    if config.kind == "best_of_n":
        return BestOfN(config, judge)
    if config.kind == "self_consistency":
        return SelfConsistency(config)
    if config.kind == "self_refine":
        return SelfRefine(config)
    return SingleCall(config)


__all__ = [
    "BestOfN",
    "SelfConsistency",
    "SelfRefine",
    "SingleCall",
    "Strategy",
    "StrategyResult",
    "call_style",
    "leader_probability",
    "parse_base_critique",
    "parse_critique",
    "parse_score",
    "selector_check",
    "strategy_for",
    "vote_keys",
    "vote_settled",
]
