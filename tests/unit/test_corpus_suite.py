"""The corpus Great Expectations suite: one good frame, and bad frames that each fail by name."""

import pyarrow as pa
import pytest

from neuronatlas.adapters.validation import run_suite
from neuronatlas.datasets.corpus import SCHEMA
from neuronatlas.expectations import corpus as corpus_suite

WINDOW, VOCAB = 3, 50


def table(**overrides: list) -> pa.Table:
    columns = {
        "sequence_id": [11, 12],
        "source": ["s", "s"],
        "doc_id": ["a", "b"],
        "window": [0, 0],
        "token_ids": [[1, 2, 3], [4, 5, 49]],
        "tokens": [["a", "b", "c"], ["d", "e", "f"]],
    }
    columns.update(overrides)
    schema = pa.schema([field.with_nullable(True) for field in SCHEMA])  # let bad frames hold nulls
    return pa.table(columns, schema=schema)


def validate(frame_table: pa.Table) -> list[str]:
    report = run_suite("corpus", corpus_suite.validation_frame(frame_table), corpus_suite.suite(WINDOW, VOCAB))
    return report.failed()


def test_good_frame_passes_every_expectation() -> None:
    report = run_suite("corpus", corpus_suite.validation_frame(table()), corpus_suite.suite(WINDOW, VOCAB))
    assert report.success
    assert report.failed() == []
    assert len(report.results) == 14
    assert report.to_manifest()["success"] is True


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"sequence_id": [7, 7]}, "expect_column_values_to_be_unique(column=sequence_id)"),
        ({"doc_id": ["a", None]}, "expect_column_values_to_not_be_null(column=doc_id)"),
        (
            {"token_ids": [[1, 2, 3], [4, 5]], "tokens": [["a", "b", "c"], ["d", "e"]]},
            "column=n_token_ids, max_value=3",
        ),
        ({"tokens": [["a", "b", "c"], ["d", "e"]]}, "expect_column_pair_values_to_be_equal"),
        ({"token_ids": [[1, 2, 3], [4, 5, 50]]}, "expect_column_values_to_be_between(column=max_token_id"),
        ({"token_ids": [[1, 2, -1], [4, 5, 6]]}, "expect_column_values_to_be_between(column=min_token_id"),
        ({"tokens": [["a", None, "c"], ["d", "e", "f"]]}, "column=null_list_elements"),
        ({"token_ids": [[1, 2, 3], None]}, "expect_column_values_to_not_be_null(column=n_token_ids)"),
    ],
)
def test_bad_frame_fails_the_named_expectation(overrides: dict, expected: str) -> None:
    failed = validate(table(**overrides))
    assert any(expected in line for line in failed), failed


def test_empty_frame_fails_row_count() -> None:
    failed = validate(table().slice(0, 0))
    assert failed == ["expect_table_row_count_to_be_between(min_value=1): 1 unexpected"]
