"""Suites for the activation records and neuron statistics of one layer."""

from typing import TYPE_CHECKING

import pandas as pd
import polars as pl
import pyarrow as pa

from neuronatlas.adapters.validation import Check
from neuronatlas.core.records import RANDOM_SPLITS, TOP_SPLITS

if TYPE_CHECKING:
    import great_expectations as gx


def records_frame(table: pa.Table, k: int, random_k: int) -> pd.DataFrame:
    """Scalar columns plus per-row facts: list length and extremes, non-finite values, how many
    rows the neuron has of this kind, whether ranks follow the activation order, and whether the
    split belongs to the kind."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    wanted = pl.when(pl.col("kind") == "random").then(random_k).otherwise(k)
    rank_order_ok = (
        pl.when(pl.col("kind") == "top")
        .then(pl.col("max_activation").diff().over(["neuron", "kind"], order_by="rank").fill_null(0) <= 0)
        .when(pl.col("kind") == "bottom")
        .then(pl.col("min_activation").diff().over(["neuron", "kind"], order_by="rank").fill_null(0) >= 0)
        .otherwise(True)
    )
    split_ok = (
        pl.when(pl.col("kind") == "random")
        .then(pl.col("split").is_in(list(RANDOM_SPLITS)))
        .otherwise(pl.col("split").is_in(list(TOP_SPLITS)))
    )
    rows_of_kind = pl.len().over(["neuron", "kind"]).cast(pl.Int64)  # signed: counts are subtracted
    derived = frame.with_columns(
        n_values=pl.col("activations").list.len().cast(pl.Int64),
        list_max=pl.col("activations").list.max(),
        list_min=pl.col("activations").list.min(),
        n_not_finite=pl.col("activations").list.eval(~pl.element().is_finite()).list.sum().cast(pl.Int64),
        missing_top_rows=pl.when(pl.col("kind") == "top").then(k - rows_of_kind).otherwise(0),
        excess_rows=rows_of_kind - wanted,
        rank_order_ok=rank_order_ok,
        split_ok=split_ok,
    ).drop("activations")
    return derived.to_pandas()


def records_suite(window: int, d_mlp: int) -> "gx.ExpectationSuite":
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name="activations",
        expectations=[
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ["neuron", "kind", "rank", "split", "sequence_id"]],
            gxe.ExpectColumnValuesToBeBetween(column="neuron", min_value=0, max_value=d_mlp - 1),
            gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=["top", "bottom", "random"]),
            gxe.ExpectColumnValuesToBeBetween(column="missing_top_rows", min_value=0, max_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="excess_rows", max_value=0),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["neuron", "kind", "rank"]),
            gxe.ExpectColumnValuesToBeInSet(column="rank_order_ok", value_set=[True]),
            gxe.ExpectColumnValuesToBeBetween(column="n_not_finite", min_value=0, max_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="n_values", min_value=window, max_value=window),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="max_activation", column_B="list_max"),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="min_activation", column_B="list_min"),
            # one row per (neuron, excerpt): no excerpt is in two splits of a neuron
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["neuron", "sequence_id"]),
            gxe.ExpectColumnValuesToBeInSet(column="split_ok", value_set=[True]),
        ],
    )


def stats_frame(table: pa.Table) -> pd.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(
        mean_within_range=(pl.col("min") <= pl.col("mean")) & (pl.col("mean") <= pl.col("max")),
    ).to_pandas()


def stats_suite(d_mlp: int, n_tokens: int) -> "gx.ExpectationSuite":
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name="neuron_stats",
        expectations=[
            gxe.ExpectTableRowCountToEqual(value=d_mlp),
            gxe.ExpectColumnValuesToBeUnique(column="neuron"),
            gxe.ExpectColumnValuesToBeBetween(column="neuron", min_value=0, max_value=d_mlp - 1),
            *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ["mean", "variance", "max", "min", "frac_positive"]],
            gxe.ExpectColumnValuesToBeBetween(column="variance", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="frac_positive", min_value=0, max_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="mean_within_range", value_set=[True]),
            gxe.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=n_tokens, max_value=n_tokens),
        ],
    )


def layer_checks(window: int, d_mlp: int, n_tokens: int, k: int, random_k: int) -> dict[str, Check]:
    """The suites of one layer's statistics and records."""
    return {
        "stats": Check("neuron_stats", stats_frame, stats_suite(d_mlp, n_tokens)),
        "records": Check("activations", lambda table: records_frame(table, k, random_k), records_suite(window, d_mlp)),
    }
