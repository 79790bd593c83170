"""Datasets: examples (an input, the expected answer, maybe a difficulty level) to evaluate on.

``files``: the analyst's CSV, JSONL and Parquet files and Hugging Face layout folders, and the
shipped ones. ``generated``: procedural reasoning tasks made locally from a seed and a level.
"""

from engine.tune.datasets.files import (
    DATASET_SUFFIXES,
    DATASETS_DIR,
    EXPECTED_ALIASES,
    INPUT_ALIASES,
    MAX_EXAMPLES,
    Dataset,
    DatasetError,
    Example,
    Scorer,
    load_dataset,
    select_examples,
    shipped_datasets,
)
from engine.tune.datasets.generated import (
    GENERATED_PREFIX,
    GeneratedSpec,
    few_shot_examples,
    generate_dataset,
    is_generated,
    parse_levels,
)

__all__ = [
    "DATASETS_DIR",
    "DATASET_SUFFIXES",
    "EXPECTED_ALIASES",
    "GENERATED_PREFIX",
    "INPUT_ALIASES",
    "MAX_EXAMPLES",
    "Dataset",
    "DatasetError",
    "Example",
    "GeneratedSpec",
    "Scorer",
    "few_shot_examples",
    "generate_dataset",
    "is_generated",
    "load_dataset",
    "parse_levels",
    "select_examples",
    "shipped_datasets",
]
