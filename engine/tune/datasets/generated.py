"""Generated datasets: procedural reasoning tasks made on this machine from a seed and a
difficulty level, by the ``reasoning-gym`` package (Apache-2.0; no download, every family has
its own scorer).

Why generated: an evaluation of test-time compute needs many examples whose difficulty is known
and can be turned up, and the answers must be checkable without a judge model. A shipped file
of 12 questions gives neither. ``gym:word_sorting`` with a seed gives the same examples on every
machine, as many as asked, at the level asked.

Difficulty: each level 1-5 is one generator configuration. The families in ``LADDERS`` have
ladders chosen for the bundled 270M base model (measured: it is neither always right nor always
wrong at levels 1-3, see the README); any other family with a reasoning-gym curriculum gets its
curriculum's attribute levels (level ``d`` sets every attribute to its ``d``-th step), which are
mostly far beyond a small model. reasoning-gym draws example ``i`` of a dataset seeded ``s``
from ``Random(s + i)``, so neighbouring seeds share examples; ``_base_seed`` therefore gives
every (seed, level) its own block of ``MAX_PER_LEVEL`` generator seeds: adding a level or
changing the seed never repeats an example, and a level's examples do not depend on the other
levels asked for. Few-shot examples for prompts come from blocks past every evaluation seed's
(``few_shot_examples``), so a prompt never shows the answer it asks for.

``reasoning_gym`` is imported on first use: it takes 1.5 s and a command that does not generate
must not pay for it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import DatasetError
from engine.tune.datasets.files import Dataset, Example

#: The prefix that names a generated dataset where a file or a shipped name could go.
GENERATED_PREFIX = "gym:"
MAX_PER_LEVEL = 1000
LEVELS = (1, 2, 3, 4, 5)
LICENCE = (
    "reasoning-gym (Apache-2.0), generated locally; https://github.com/open-thought/reasoning-gym"
)
MAX_SEED = 2**31 - 1


def _base_seed(seed: int, level: int) -> int:
    """The first generator seed of (seed, level)'s block; blocks never overlap."""
    return (seed * len(LEVELS) + level - 1) * MAX_PER_LEVEL


#: Few-shot examples come from the block after every evaluation seed's.
FEW_SHOT_SEED = MAX_SEED + 1


def _terms(count: int, digits: int) -> dict[str, int]:
    return {"min_terms": count, "max_terms": count, "min_digits": digits, "max_digits": digits}


#: Per family, the generator configuration of levels 1-5, easiest first. Chosen from probes of the
#: bundled 270M base model (3 worked examples of the same level, greedy, mean score over 16):
#: word_sorting 0.61 / 0.35 / 0.25 at levels 1-3, chain_sum 0.25 / 0.19 / 0.03. With worked
#: examples from mixed levels (the shipped plans) chain_sum falls to 1-4 right of 42 (README).
LADDERS: dict[str, list[dict[str, Any]]] = {
    "word_sorting": [
        {"min_words": n, "max_words": n, "min_word_length": 3, "max_word_length": 6}
        for n in (2, 3, 4, 5, 7)
    ],
    "chain_sum": [_terms(2, 1), _terms(3, 1), _terms(4, 1), _terms(2, 2), _terms(3, 2)],
    "letter_counting": [{"min_words": n, "max_words": n} for n in (1, 3, 6, 10, 15)],
    "spell_backward": [{"min_word_len": n, "max_word_len": n} for n in (3, 4, 5, 7, 9)],
    "products": [_terms(2, 1), _terms(3, 1), _terms(2, 2), _terms(3, 2), _terms(2, 3)],
}
#: The families the README and the Evaluate page offer first (the bundled model scores
#: between 0 and 1 on them); every reasoning-gym family can be named.
RECOMMENDED = ("word_sorting", "chain_sum")

_SPEC = re.compile(r"^[a-z0-9_]+$")
_LEVEL = re.compile(r"^[0-9]{1,2}$")


@dataclass(frozen=True)
class GeneratedSpec:
    """Which examples to generate: ``per_level`` examples at each of ``levels``, from ``seed``."""

    family: str
    seed: int = 0
    levels: tuple[int, ...] = (1,)
    per_level: int = 10

    @property
    def name(self) -> str:
        return f"{GENERATED_PREFIX}{self.family}"

    @property
    def source(self) -> str:
        levels = ",".join(str(level) for level in self.levels)
        return f"{self.name} seed={self.seed} levels={levels} per_level={self.per_level}"


@dataclass
class _Generated:
    """The generator objects behind a dataset: each level's reasoning-gym dataset and entries."""

    datasets: dict[int, Any] = field(default_factory=dict)
    entries: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)


def is_generated(name: str) -> bool:
    return name.startswith(GENERATED_PREFIX)


def family_of(name: str) -> str:
    return name[len(GENERATED_PREFIX) :] if is_generated(name) else name


def parse_levels(text: str) -> tuple[int, ...]:
    """``"2"``, ``"1-3"`` or ``"1,3,5"`` -> the levels, each 1-5; ``DatasetError`` otherwise."""
    levels: set[int] = set()
    for part in text.replace(" ", "").split(","):
        bounds = part.split("-")
        if not part or len(bounds) > 2 or not all(_LEVEL.match(b) for b in bounds):
            raise DatasetError(
                f"Difficulty {text[:40]!r} is not a level list: write 2, 1-3 or 1,3,5 (levels 1-5)."
            )
        low, high = int(bounds[0]), int(bounds[-1])
        if not (1 <= low <= high <= 5):
            raise DatasetError(f"Difficulty levels go from 1 to 5 (low to high), not {part!r}.")
        levels.update(range(low, high + 1))
    return tuple(sorted(levels))


def _reasoning_gym() -> Any:
    try:
        from reasoning_gym import factory
    except ImportError as exc:  # pragma: no cover - a dependency of Arbor
        raise DatasetError(
            "Generated datasets need the 'reasoning-gym' package: pip install reasoning-gym"
        ) from exc
    return factory


def generated_families() -> list[str]:
    """Every family that can be generated: the recommended ones first, then the others."""
    factory = _reasoning_gym()
    levelled = (set(factory.DATASETS) & set(factory.CURRICULA)) | set(LADDERS)
    return [*RECOMMENDED, *sorted(levelled - set(RECOMMENDED))]


def _check_family(family: str) -> None:
    factory = _reasoning_gym()
    if not _SPEC.match(family) or family not in factory.DATASETS:
        close = difflib.get_close_matches(family, list(factory.DATASETS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise DatasetError(
            f"No generated dataset family {family[:60]!r}.{hint} "
            f"Try {', '.join(RECOMMENDED)} (all of them: run.py datasets)."
        )
    if family not in LADDERS and family not in factory.CURRICULA:
        raise DatasetError(f"Family {family!r} has no difficulty levels to generate from.")


def level_config(family: str, level: int) -> dict[str, Any]:
    """The generator configuration of ``family`` at ``level`` (1-5)."""
    _check_family(family)
    if level not in LEVELS:
        raise DatasetError(f"Difficulty levels go from 1 to 5, not {level}.")
    if family in LADDERS:
        return dict(LADDERS[family][level - 1])
    from reasoning_gym.coaching.base_curriculum import (
        DefaultCurriculumContext,
        RangeAttributeMode,
    )

    curriculum = _reasoning_gym().create_curriculum(family)
    for name, attribute in curriculum.attributes.items():
        curriculum.set_attr_level(name, min(level - 1, len(attribute.levels) - 1))
    config = curriculum.generate_configuration(
        {}, DefaultCurriculumContext(mode=RangeAttributeMode.UPPER_BOUND)
    )
    return {
        key: value
        for key, value in vars(config).items()
        if key not in ("seed", "size") and not key.startswith("_")
    }


def _one_line(exc: BaseException) -> str:
    """A generator's error as one line (its own messages can span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _make(family: str, level: int, seed: int, size: int) -> Any:
    config = level_config(family, level)
    try:
        return _reasoning_gym().create_dataset(family, seed=seed, size=size, **config)
    except Exception as exc:  # the generator's own validation (AssertionError, ValueError ...)
        raise DatasetError(
            f"{GENERATED_PREFIX}{family} level {level} cannot be generated: {_one_line(exc)}"
        ) from None


def _examples(spec: GeneratedSpec, seed_of: Any, generated: _Generated) -> list[Example]:
    examples: list[Example] = []
    for level in spec.levels:
        dataset = _make(spec.family, level, seed_of(level), spec.per_level)
        generated.datasets[level] = dataset
        for index in range(spec.per_level):
            try:
                entry = dataset[index]
            except Exception as exc:
                raise DatasetError(
                    f"{spec.name} level {level} example {index} failed to generate: "
                    f"{_one_line(exc)}"
                ) from None
            example_id = f"L{level}-{index + 1}"
            generated.entries[example_id] = (level, entry)
            examples.append(
                Example(
                    id=example_id,
                    input=str(entry["question"]).strip(),
                    expected=str(entry["answer"]).strip(),
                    difficulty=level,
                )
            )
    return examples


def _validated(spec: GeneratedSpec) -> GeneratedSpec:
    _check_family(spec.family)
    if not spec.levels or any(level not in LEVELS for level in spec.levels):
        raise DatasetError(f"Difficulty levels go from 1 to 5, not {list(spec.levels)}.")
    if not 1 <= spec.per_level <= MAX_PER_LEVEL:
        raise DatasetError(
            f"Examples per level must be from 1 to {MAX_PER_LEVEL}, not {spec.per_level}."
        )
    if not 0 <= spec.seed <= MAX_SEED:
        raise DatasetError(f"The seed must be from 0 to {MAX_SEED}, not {spec.seed}.")
    return GeneratedSpec(spec.family, spec.seed, tuple(sorted(set(spec.levels))), spec.per_level)


def generate_dataset(spec: GeneratedSpec) -> Dataset:
    """``spec``'s examples (ids ``L<level>-<n>``), with the family's own scorer as ``scorer``.

    The same spec gives the same examples on any machine. ``DatasetError`` for an unknown
    family, levels outside 1-5, a size out of range or a generator that fails.
    """
    spec = _validated(spec)
    generated = _Generated()
    examples = _examples(spec, lambda level: _base_seed(spec.seed, level), generated)

    def score(answer: str, example: Example) -> float:
        found = generated.entries.get(example.id)
        if found is None:
            return 0.0
        level, entry = found
        try:
            return float(generated.datasets[level].score_answer(answer.strip(), entry))
        except Exception:  # a scorer that trips on odd text scores it wrong, not the run
            return 0.0

    return Dataset(
        name=spec.name, examples=examples, source=spec.source, scorer=score, licence=LICENCE
    )


def few_shot_examples(family: str, levels: Sequence[int], per_level: int = 1) -> list[Example]:
    """Worked examples for prompts, from a seed no evaluation uses: ``per_level`` per level."""
    spec = _validated(GeneratedSpec(family, 0, tuple(levels), per_level))
    return _examples(spec, lambda level: _base_seed(FEW_SHOT_SEED, level), _Generated())


__all__ = [
    "GENERATED_PREFIX",
    "LADDERS",
    "LICENCE",
    "RECOMMENDED",
    "GeneratedSpec",
    "family_of",
    "few_shot_examples",
    "generate_dataset",
    "generated_families",
    "is_generated",
    "level_config",
    "parse_levels",
]
