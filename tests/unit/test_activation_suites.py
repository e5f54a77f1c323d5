"""The activation records and neuron statistics suites: one good frame, and bad frames that each
fail by name."""

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from neuronatlas.adapters.validation import run_suite
from neuronatlas.core.records import layer_records, random_pool
from neuronatlas.core.stats import RunningStats
from neuronatlas.core.topk import RunningTopK
from neuronatlas.datasets.activations import RECORDS_SCHEMA, STATS_SCHEMA, records_table, stats_table
from neuronatlas.expectations import activations as suites

N_EXCERPTS, WINDOW, D_MLP, K, RANDOM_K = 40, 5, 4, 4, 3
N_TOKENS = N_EXCERPTS * WINDOW
# let bad frames hold nulls
NULLABLE_RECORDS = pa.schema([field.with_nullable(True) for field in RECORDS_SCHEMA])
NULLABLE_STATS = pa.schema([field.with_nullable(True) for field in STATS_SCHEMA])

Row = dict[str, Any]


@cache
def good_tables(n_excerpts: int = N_EXCERPTS) -> tuple[pa.Table, pa.Table]:
    """(records, stats) of one layer, extracted as the pipeline does from random activations."""
    generator = torch.Generator().manual_seed(0)
    acts = torch.randn(n_excerpts, WINDOW, D_MLP, generator=generator)  # (N, T, D)
    top = RunningTopK(D_MLP, K, WINDOW, largest=True)
    bottom = RunningTopK(D_MLP, 2 * K, WINDOW, largest=False)
    stats = RunningStats(D_MLP)
    for excerpts in torch.arange(n_excerpts).split(6):
        batch = acts[excerpts]
        top.update(batch.amax(dim=1), batch, excerpts)
        bottom.update(batch.amin(dim=1), batch, excerpts)
        stats.update(batch)
    pool = random_pool(n_excerpts, RANDOM_K + 2 * K, np.random.default_rng(1))
    records = layer_records(
        top.indices, top.activations, bottom.indices, bottom.activations, pool, acts[pool], K, RANDOM_K
    )
    sequence_ids = np.arange(n_excerpts, dtype=np.int64) * 3 + 500
    return records_table(records, sequence_ids), stats_table(stats.result(), records, K, RANDOM_K)


def validate_records(table: pa.Table) -> list[str]:
    frame = suites.records_frame(table, K, RANDOM_K)
    return run_suite("activations", frame, suites.records_suite(WINDOW, D_MLP)).failed()


def validate_stats(table: pa.Table) -> list[str]:
    return run_suite("neuron_stats", suites.stats_frame(table), suites.stats_suite(D_MLP, N_TOKENS)).failed()


def names(failed: list[str]) -> set[str]:
    """The expectation of each failed line, without its counts and examples."""
    return {line.partition("): ")[0] + ")" for line in failed}


def find(rows: list[Row], neuron: int, kind: str, rank: int) -> Row:
    [row] = [r for r in rows if (r["neuron"], r["kind"], r["rank"]) == (neuron, kind, rank)]
    return row


def test_good_records_pass_every_expectation() -> None:
    table, _ = good_tables()
    assert table.num_rows == D_MLP * (K + K + RANDOM_K)
    report = run_suite("activations", suites.records_frame(table, K, RANDOM_K), suites.records_suite(WINDOW, D_MLP))
    assert report.failed() == []
    assert report.success
    assert len(report.results) == 18
    assert report.rows == 44


def test_short_records_of_a_small_corpus_pass() -> None:
    # 10 excerpts: 4 top and 4 bottom per neuron leave 2 of the 10 pooled excerpts for random (< 3),
    # which stats_table flags as short_records: a valid layer, not a broken one
    table, stats = good_tables(10)
    assert stats.column("n_random").to_pylist() == [2] * D_MLP
    assert stats.column("short_records").to_pylist() == [True] * D_MLP
    frame = suites.records_frame(table, K, RANDOM_K)
    assert frame["excess_rows"].tolist() == ([0] * 8 + [-1] * 2) * D_MLP
    report = run_suite("activations", frame, suites.records_suite(WINDOW, D_MLP))
    assert report.failed() == []


def neuron_out_of_range(rows: list[Row]) -> None:
    for row in rows:
        if row["neuron"] == 3:
            row["neuron"] = D_MLP


def unknown_kind(rows: list[Row]) -> None:
    for row in rows:
        if row["neuron"] == 0 and row["kind"] == "random":
            row["kind"] = "noise"


def missing_top_row(rows: list[Row]) -> None:
    rows.remove(find(rows, 1, "top", K - 1))


def too_many_random_rows(rows: list[Row]) -> None:
    extra = dict(find(rows, 2, "random", RANDOM_K - 1), rank=RANDOM_K, split="calibration", sequence_id=999_999)
    rows.append(extra)


def duplicate_rank(rows: list[Row]) -> None:
    find(rows, 0, "random", 2)["rank"] = 1


def swap_ranks(kind: str, neuron: int) -> Callable[[list[Row]], None]:
    def mutate(rows: list[Row]) -> None:
        first, second = find(rows, neuron, kind, 0), find(rows, neuron, kind, 1)
        first["rank"], second["rank"] = 1, 0
        first["split"], second["split"] = second["split"], first["split"]

    return mutate


def nan_activation(rows: list[Row]) -> None:
    row = find(rows, 3, "random", 0)
    row["activations"][row["activations"].index(row["max_activation"])] = float("nan")


def inf_activation(rows: list[Row]) -> None:
    row = find(rows, 3, "random", 0)
    row["activations"][row["activations"].index(row["max_activation"])] = float("inf")
    row["max_activation"] = float("inf")  # so that only the non-finite check can catch it


def short_list(rows: list[Row]) -> None:
    row = find(rows, 3, "random", 1)
    row["activations"] = row["activations"][:-1]
    row["max_activation"], row["min_activation"] = max(row["activations"]), min(row["activations"])


def wrong_max(rows: list[Row]) -> None:
    find(rows, 1, "random", 0)["max_activation"] += 1.0


def wrong_min(rows: list[Row]) -> None:
    find(rows, 1, "random", 2)["min_activation"] -= 1.0


def excerpt_in_two_splits(rows: list[Row]) -> None:
    find(rows, 0, "random", 0)["sequence_id"] = find(rows, 0, "top", 0)["sequence_id"]


def random_in_train(rows: list[Row]) -> None:
    find(rows, 2, "random", 0)["split"] = "train"


def null_sequence_id(rows: list[Row]) -> None:
    find(rows, 2, "bottom", 3)["sequence_id"] = None


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (neuron_out_of_range, "expect_column_values_to_be_between(column=neuron, max_value=3.0, min_value=0.0)"),
        (unknown_kind, "expect_column_values_to_be_in_set(column=kind, value_set=['top', 'bottom', 'random'])"),
        (missing_top_row, "expect_column_values_to_be_between(column=missing_top_rows, max_value=0.0, min_value=0.0)"),
        (too_many_random_rows, "expect_column_values_to_be_between(column=excess_rows, max_value=0.0)"),
        (duplicate_rank, "expect_compound_columns_to_be_unique(column_list=['neuron', 'kind', 'rank'])"),
        (swap_ranks("top", 1), "expect_column_values_to_be_in_set(column=rank_order_ok, value_set=[True])"),
        (swap_ranks("bottom", 2), "expect_column_values_to_be_in_set(column=rank_order_ok, value_set=[True])"),
        (nan_activation, "expect_column_values_to_be_between(column=n_not_finite, max_value=0.0, min_value=0.0)"),
        (inf_activation, "expect_column_values_to_be_between(column=n_not_finite, max_value=0.0, min_value=0.0)"),
        (short_list, "expect_column_values_to_be_between(column=n_values, max_value=5.0, min_value=5.0)"),
        (wrong_max, "expect_column_pair_values_to_be_equal(column_A=max_activation, column_B=list_max)"),
        (wrong_min, "expect_column_pair_values_to_be_equal(column_A=min_activation, column_B=list_min)"),
        (excerpt_in_two_splits, "expect_compound_columns_to_be_unique(column_list=['neuron', 'sequence_id'])"),
        (random_in_train, "expect_column_values_to_be_in_set(column=split_ok, value_set=[True])"),
        (null_sequence_id, "expect_column_values_to_not_be_null(column=sequence_id)"),
    ],
)
def test_bad_records_fail_the_named_expectation(mutate: Callable[[list[Row]], None], expected: str) -> None:
    table, _ = good_tables()
    rows = table.to_pylist()
    mutate(rows)
    failed = validate_records(pa.Table.from_pylist(rows, schema=NULLABLE_RECORDS))
    assert expected in names(failed), failed
    # and nothing else, but a NaN in the list also makes its maximum NaN, which equals nothing
    also = {"expect_column_pair_values_to_be_equal(column_A=max_activation, column_B=list_max)"}
    assert names(failed) == ({expected} | also if mutate is nan_activation else {expected}), failed


def test_empty_records_fail_row_count() -> None:
    table, _ = good_tables()
    failed = validate_records(table.slice(0, 0))
    assert failed == ["expect_table_row_count_to_be_between(min_value=1): 1 unexpected"]


def test_good_stats_pass_every_expectation() -> None:
    _, table = good_tables()
    report = run_suite("neuron_stats", suites.stats_frame(table), suites.stats_suite(D_MLP, N_TOKENS))
    assert report.failed() == []
    assert report.success
    assert len(report.results) == 12
    assert report.rows == D_MLP


def stats_rows(**changes: Any) -> Callable[[list[Row]], None]:
    """Set `column=(row, value)` in the given rows."""

    def mutate(rows: list[Row]) -> None:
        for column, (index, value) in changes.items():
            rows[index][column] = value(rows[index]) if callable(value) else value

    return mutate


def drop_last(rows: list[Row]) -> None:
    rows.pop()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (drop_last, "expect_table_row_count_to_equal(value=4)"),
        (stats_rows(neuron=(1, 0)), "expect_column_values_to_be_unique(column=neuron)"),
        (
            stats_rows(neuron=(3, D_MLP)),
            "expect_column_values_to_be_between(column=neuron, max_value=3.0, min_value=0.0)",
        ),
        (stats_rows(variance=(2, -1e-3)), "expect_column_values_to_be_between(column=variance, min_value=0.0)"),
        (
            stats_rows(frac_positive=(0, 1.5)),
            "expect_column_values_to_be_between(column=frac_positive, max_value=1.0, min_value=0.0)",
        ),
        (
            stats_rows(mean=(1, lambda row: row["max"] + 1.0)),
            "expect_column_values_to_be_in_set(column=mean_within_range, value_set=[True])",
        ),
        (
            stats_rows(mean=(2, lambda row: row["min"] - 1.0)),
            "expect_column_values_to_be_in_set(column=mean_within_range, value_set=[True])",
        ),
        (
            stats_rows(n_tokens=(3, N_TOKENS + 1)),
            "expect_column_values_to_be_between(column=n_tokens, max_value=200.0, min_value=200.0)",
        ),
        (stats_rows(mean=(0, None)), "expect_column_values_to_not_be_null(column=mean)"),
    ],
)
def test_bad_stats_fail_the_named_expectation(mutate: Callable[[list[Row]], None], expected: str) -> None:
    _, table = good_tables()
    rows = table.to_pylist()
    mutate(rows)
    failed = validate_stats(pa.Table.from_pylist(rows, schema=NULLABLE_STATS))
    assert names(failed) == {expected}, failed
