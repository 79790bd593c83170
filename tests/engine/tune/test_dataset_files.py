"""The analyst's files: Parquet, Hugging Face layout folders, difficulty columns, GSM8K answers."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import DatasetError
from engine.tune.datasets import files as dataset_files
from engine.tune.datasets import load_dataset


def _parquet(path: Path, columns: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def test_a_parquet_file_reads_like_a_jsonl_one(tmp_path):
    path = _parquet(
        tmp_path / "qa.parquet",
        {
            "Question": ["Two plus two?", "Three plus four?"],
            "answer": [4, 7],
            "level": [1, 3],
            "other": [[1, 2], None],
        },
    )
    dataset = load_dataset(path)
    assert [(e.id, e.input, e.expected, e.difficulty) for e in dataset.examples] == [
        ("1", "Two plus two?", "4", 1),
        ("2", "Three plus four?", "7", 3),
    ]
    assert dataset.name == "qa" and dataset.difficulty_levels() == [1, 3]


def test_a_gsm8k_worked_answer_is_cut_to_its_final_answer(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(
        '{"question": "Tom has 3 apples and buys 4. How many?", '
        '"answer": "He has 3 + 4 = <<3+4=7>>7 apples.\\n#### 7"}\n',
        encoding="utf-8",
    )
    assert load_dataset(path).examples[0].expected == "7"


def test_a_hugging_face_layout_folder_reads_the_test_split_in_shard_order(tmp_path):
    folder = tmp_path / "gsm8k"
    _parquet(folder / "data" / "train-00000-of-00001.parquet", {"question": ["t"], "answer": ["1"]})
    _parquet(
        folder / "data" / "test-00001-of-00002.parquet",
        {"id": ["b"], "question": ["second"], "answer": ["2"]},
    )
    _parquet(
        folder / "data" / "test-00000-of-00002.parquet",
        {"id": ["a"], "question": ["first"], "answer": ["1"]},
    )
    dataset = load_dataset(folder)
    assert dataset.name == "gsm8k/test"
    assert [e.input for e in dataset.examples] == ["first", "second"]
    assert [e.input for e in load_dataset(folder, split="train").examples] == ["t"]
    with pytest.raises(DatasetError, match="no split 'dev'; it has test, train"):
        load_dataset(folder, split="dev")


def test_a_folder_with_several_unknown_splits_asks_for_one(tmp_path):
    _parquet(tmp_path / "d" / "alpha.parquet", {"input": ["a"], "expected": ["b"]})
    _parquet(tmp_path / "d" / "beta.parquet", {"input": ["a"], "expected": ["b"]})
    with pytest.raises(DatasetError, match=r"several splits .*name one with --split"):
        load_dataset(tmp_path / "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no \.csv, \.jsonl or \.parquet files"):
        load_dataset(tmp_path / "empty")


def test_ids_repeated_across_shards_are_refused(tmp_path):
    for shard in ("00000", "00001"):
        _parquet(
            tmp_path / "d" / f"test-{shard}-of-00002.parquet",
            {"id": ["x"], "input": ["a"], "expected": ["b"]},
        )
    with pytest.raises(DatasetError, match="id 'x' is used again"):
        load_dataset(tmp_path / "d")


@pytest.mark.parametrize("level", ["0", "6", "2.5", "hard", "1e9"])
def test_a_difficulty_outside_1_to_5_is_refused_naming_the_line(tmp_path, level):
    path = tmp_path / "d.csv"
    path.write_text(f"input,expected,difficulty\na,b,1\nc,d,{level}\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"d\.csv:3: the 'difficulty' must be a whole number"):
        load_dataset(path)


def test_a_parquet_file_past_the_row_limit_is_refused_before_it_is_all_read(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_files, "MAX_EXAMPLES", 50)
    path = _parquet(
        tmp_path / "big.parquet",
        {"input": [f"q{i}" for i in range(5000)], "expected": ["a"] * 5000},
    )
    with pytest.raises(DatasetError, match="more than 50 rows"):
        load_dataset(path)


def test_a_parquet_file_without_the_columns_names_what_it_found(tmp_path):
    path = _parquet(tmp_path / "x.parquet", {"text": ["a"], "label": [1]})
    with pytest.raises(DatasetError, match=r"no 'input' column .* found 'text', 'label'"):
        load_dataset(path)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=400))
def test_any_bytes_named_parquet_are_read_or_refused_in_one_line(tmp_path, data):
    path = tmp_path / "fuzz.parquet"
    # Real Parquet framing around random bytes gets further into the reader than random bytes.
    path.write_bytes(b"PAR1" + data + b"PAR1" if data[:1] == b"\x00" else data)
    try:
        load_dataset(path)
    except DatasetError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.text(max_size=20), st.one_of(st.none(), st.text(max_size=10), st.integers())),
        min_size=1,
        max_size=5,
    )
)
def test_any_parquet_rows_are_read_or_refused_in_one_line(tmp_path, rows):
    path = _parquet(
        tmp_path / "rows.parquet",
        {
            "input": [question for question, _ in rows],
            "expected": [None if a is None else str(a) for _, a in rows],
        },
    )
    try:
        dataset = load_dataset(path)
    except DatasetError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(e.input and e.expected for e in dataset.examples)
