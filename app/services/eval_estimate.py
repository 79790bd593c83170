"""What the Evaluate page opens on, and what an evaluation will cost before it starts.

Defaults: each shipped dataset declares the checker its answers need and the shipped
evaluation plan written for it (``assets/datasets/defaults.json``), so the page never opens on
the workbench's many-node plan with a text checker for numeric answers.

Estimate: an evaluation runs every configuration on every example. A configuration's run
makes, per node, at most ``strategy.most_calls`` calls of at most the allocated output limit
(``engine.run.allocation.allocate`` under the workbench caps, which is what the run uses), so

    calls  = examples × Σ configurations Σ nodes most_calls
    tokens = examples × Σ configurations min(caps.total_tokens,
                                             Σ nodes most_calls × (prompt + max_tokens))
    time   = Σ calls × seconds per call of the node's model

Prompts are estimated at about 3 characters a token (title, instruction and the example's
input in the task's place, plus upstream outputs at their limits). Seconds per call are the
median of the model's calls recorded in the trace store (``TraceStore.call_seconds``); a
model with none recorded is assumed to read ``ASSUMED_PROMPT_TOKENS_PER_S`` and write
``ASSUMED_OUTPUT_TOKENS_PER_S`` (the bundled Gemma 3 270M on two CPU cores, measured). Calls
run one after another here (one local model serves one call at a time), and repeated calls
replay from the call cache for nothing, so the figures are upper bounds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.plan import Plan
from engine.run.allocation import allocate
from engine.run.budget import RunCaps
from engine.tune.datasets import files as datasets

DEFAULTS_FILE = "defaults.json"
#: The bundled model on two CPU cores (measured; see README "Speed").
ASSUMED_OUTPUT_TOKENS_PER_S = 40.0
ASSUMED_PROMPT_TOKENS_PER_S = 400.0
CHARS_PER_TOKEN = 3


@dataclass(frozen=True)
class DatasetDefaults:
    """The checker kind and shipped plan (None: no plan written for it) that fit a dataset."""

    checker: str
    plan: str | None = None


def dataset_defaults(folder: Path | None = None) -> dict[str, DatasetDefaults]:
    """The shipped datasets' declared defaults, by dataset name ({} when the file is missing
    or unreadable: the page then keeps its generic defaults)."""
    path = (folder or datasets.DATASETS_DIR) / DEFAULTS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {
        name: DatasetDefaults(str(entry["checker"]), entry.get("plan"))
        for name, entry in raw.items()
        if isinstance(entry, dict) and "checker" in entry
    }


@dataclass(frozen=True)
class ConfigurationEstimate:
    name: str
    calls_per_example: int
    tokens_per_example: int
    seconds_per_example: float


@dataclass(frozen=True)
class EvaluationEstimate:
    """An evaluation's upper bounds; ``measured`` names the models whose seconds per call
    came from recorded calls, ``assumed`` those whose came from the stated assumption."""

    examples: int
    configurations: tuple[ConfigurationEstimate, ...]
    measured: tuple[str, ...]
    assumed: tuple[str, ...]

    @property
    def calls(self) -> int:
        return self.examples * sum(c.calls_per_example for c in self.configurations)

    @property
    def tokens(self) -> int:
        return self.examples * sum(c.tokens_per_example for c in self.configurations)

    @property
    def seconds(self) -> float:
        return self.examples * sum(c.seconds_per_example for c in self.configurations)

    def sentence(self) -> str:
        """One line for the page: calls, tokens and time, and where the time comes from."""
        basis = []
        if self.measured:
            basis.append(f"recorded seconds per call of {', '.join(self.measured)}")
        if self.assumed:
            basis.append(
                f"{', '.join(self.assumed)} assumed at {ASSUMED_OUTPUT_TOKENS_PER_S:g} output "
                f"and {ASSUMED_PROMPT_TOKENS_PER_S:g} prompt tokens/s (nothing recorded yet)"
            )
        return (
            f"At most {self.calls:,} calls, {self.tokens:,} tokens, about "
            f"{duration_text(self.seconds)} ({self.examples} examples × "
            f"{len(self.configurations)} configuration"
            f"{'s' if len(self.configurations) != 1 else ''}; time from "
            f"{'; '.join(basis) or 'no calls'}). Calls already made replay from the cache."
        )


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _prompt_tokens(plan: Plan, node_id: str, example_chars: int, limits: Mapping[str, int]) -> int:
    node = plan.nodes()[node_id]
    upstream = [*node.depends_on, *(child.id for child in node.children)]
    # The example's input takes the task's place in the prompt.
    chars = (example_chars or len(plan.task)) + len(node.title) + len(node.instruction)
    return chars // CHARS_PER_TOKEN + sum(limits.get(other, 0) for other in upstream)


def model_labels(configurations: Sequence[tuple[str, Plan, RunCaps]]) -> list[str]:
    """The labels of the models the configurations' nodes would call (as traces name them)."""
    return sorted(
        {
            item.model.label
            for _, plan, caps in configurations
            for item in allocate(plan, caps).nodes.values()
        }
    )


def estimate_evaluation(
    configurations: Sequence[tuple[str, Plan, RunCaps]],
    examples: int,
    *,
    example_chars: int = 0,
    seconds_per_call: Mapping[str, float] | None = None,
) -> EvaluationEstimate:
    """The upper bounds of running ``configurations`` (name, plan, caps) over ``examples``
    examples whose inputs average ``example_chars`` characters; ``seconds_per_call`` maps a
    model label to its recorded seconds per call. Raises ``ArborError`` for a plan that
    cannot be allocated (an invalid graph)."""
    recorded = dict(seconds_per_call or {})
    measured: set[str] = set()
    assumed: set[str] = set()
    estimates = []
    for name, plan, caps in configurations:
        allocation = allocate(plan, caps)
        limits = {node_id: item.max_tokens for node_id, item in allocation.nodes.items()}
        calls = tokens = 0
        seconds = 0.0
        for node_id, item in allocation.nodes.items():
            most = item.strategy.most_calls
            prompt = _prompt_tokens(plan, node_id, example_chars, limits)
            calls += most
            tokens += most * (prompt + item.max_tokens)
            label = item.model.label
            if label in recorded:
                measured.add(label)
                per_call = recorded[label]
            else:
                assumed.add(label)
                per_call = (
                    prompt / ASSUMED_PROMPT_TOKENS_PER_S
                    + item.max_tokens / ASSUMED_OUTPUT_TOKENS_PER_S
                )
            seconds += most * per_call
        estimates.append(
            ConfigurationEstimate(name, calls, min(tokens, caps.total_tokens), seconds)
        )
    return EvaluationEstimate(
        examples, tuple(estimates), tuple(sorted(measured)), tuple(sorted(assumed))
    )


__all__ = [
    "DatasetDefaults",
    "EvaluationEstimate",
    "dataset_defaults",
    "estimate_evaluation",
    "model_labels",
]
