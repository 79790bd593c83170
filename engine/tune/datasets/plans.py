"""Ready-made evaluation plans for generated datasets: three few-shot nodes for a base model.

A base model answers a task it has seen worked a few times; it does not follow instructions. So
each node's prompt is a few worked examples of the same family (from ``few_shot_examples``, a
seed no evaluation uses) followed by the example to answer:

* ``draft`` answers the question;
* ``check`` sees the question and the draft and writes the corrected answer (its worked
  examples include a wrong first answer that gets corrected, and right ones that are kept);
* the root ``final`` sees both answers and gives the final one.

Outputs feed each other (draft -> check -> final, draft -> final), which is what the recorded
outcome table and the allocation benchmarks need: spending more on one node changes what the
next one reads. The worked examples are put in a Jinja ``raw`` block, so braces in a generated
question are text, not template syntax.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.plan import ModelRef, Node, Plan
from engine.plan.model_settings import GenerationConfig
from engine.tune.datasets.generated import GENERATED_PREFIX, few_shot_examples

#: The example's question on one line, as the worked examples are written.
TASK = "{{ task.split() | join(' ') }}"
#: Output limit of every node unless a configuration sets another (a 7-word sorted list is ~20).
DEFAULT_MAX_TOKENS = 48


def _raw(text: str) -> str:
    return "{% raw %}" + text.replace("{% endraw %}", "{ % endraw % }") + "{% endraw %}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def few_shot_plan(family: str, levels: Sequence[int] = (1, 2, 3)) -> Plan:
    """The three-node draft / check / final plan for ``gym:<family>``, one worked example per
    level in ``levels`` (3 levels: 3 worked examples per node)."""
    shots = few_shot_examples(family, levels)
    wrong = [shots[(i + 1) % len(shots)].expected for i in range(len(shots))]
    draft = "".join(f"Q: {_one_line(s.input)}\nA: {s.expected}\n\n" for s in shots)
    # The first worked example shows a wrong draft corrected; the others a right one kept.
    check = "".join(
        f"Q: {_one_line(s.input)}\nFirst answer: {wrong[i] if i == 0 else s.expected}\n"
        f"Correct answer: {s.expected}\n\n"
        for i, s in enumerate(shots)
    )
    final = "".join(
        f"Q: {_one_line(s.input)}\nAnswer 1: {wrong[i] if i == 0 else s.expected}\n"
        f"Answer 2: {s.expected}\nFinal answer: {s.expected}\n\n"
        for i, s in enumerate(shots)
    )
    draft_node = Node(
        id="draft",
        title="Draft an answer",
        instruction=_raw(draft) + f"Q: {TASK}\nA:",
    )
    check_node = Node(
        id="check",
        title="Check the draft",
        instruction=_raw(check) + f"Q: {TASK}\nFirst answer: {{{{ deps.draft }}}}\nCorrect answer:",
        depends_on=["draft"],
    )
    root = Node(
        id="final",
        title="Final answer",
        instruction=_raw(final)
        + f"Q: {TASK}\nAnswer 1: {{{{ deps.draft }}}}\nAnswer 2: {{{{ deps.check }}}}"
        + "\nFinal answer:",
        children=[draft_node, check_node],
        depends_on=["draft", "check"],
    )
    return Plan(
        task=shots[0].input,
        root=root,
        default_model=ModelRef(kind="local"),
        default_generation=GenerationConfig(
            temperature=0.0,
            max_tokens=DEFAULT_MAX_TOKENS,
            stop=["\n"],
            prompt_format="completion",
        ),
    )


def plan_name(family: str) -> str:
    """The shipped plan's file stem for ``gym:<family>``."""
    return f"gym_{family}"


__all__ = ["DEFAULT_MAX_TOKENS", "GENERATED_PREFIX", "few_shot_plan", "plan_name"]
