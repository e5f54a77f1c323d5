"""Suites for the explanation, simulation and score datasets of one layer."""

from typing import TYPE_CHECKING

import pandas as pd
import polars as pl
import pyarrow as pa

from neuronatlas.adapters.validation import Check
from neuronatlas.datasets.explanations import REASONED_COLUMNS, SCORE_COLUMNS

if TYPE_CHECKING:
    import great_expectations as gx


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def explanations_frame(table: pa.Table) -> pd.DataFrame:
    """Adds `exactly_one_outcome`: an explanation or a failure reason, never both or neither."""
    frame = _frame(table)
    return frame.with_columns(
        exactly_one_outcome=pl.col("explanation").is_null() != pl.col("failure_reason").is_null(),
        explanation_words=pl.col("explanation").str.split(" ").list.len().fill_null(1),
    ).to_pandas()


def explanations_suite(d_mlp: int, samples: int) -> "gx.ExpectationSuite":
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name="explanations",
        expectations=[
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="neuron", min_value=0, max_value=d_mlp - 1),
            gxe.ExpectColumnValuesToBeBetween(column="explanation_id", min_value=0, max_value=samples - 1),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron", "explanation_id"]),
            gxe.ExpectColumnValuesToBeInSet(column="exactly_one_outcome", value_set=[True]),
            gxe.ExpectColumnValuesToBeBetween(column="explanation_words", min_value=1, max_value=40),
            gxe.ExpectColumnValuesToNotMatchRegex(column="explanation", regex=r"^\s*$"),
        ],
    )


def simulations_frame(table: pa.Table) -> pd.DataFrame:
    """Adds list lengths, the range of the simulated values, and whether a row has exactly one of
    simulated values or a failure reason."""
    frame = _frame(table)
    return (
        frame.with_columns(
            n_true=pl.col("true_activations").list.len().cast(pl.Int64),
            n_simulated=pl.col("simulated_activations")
            .list.len()
            .cast(pl.Int64)
            .fill_null(pl.col("true_activations").list.len().cast(pl.Int64)),
            simulated_min=pl.col("simulated_activations").list.min(),
            simulated_max=pl.col("simulated_activations").list.max(),
            n_not_finite=pl.col("true_activations").list.eval(~pl.element().is_finite()).list.sum().cast(pl.Int64),
            exactly_one_outcome=pl.col("simulated_activations").is_null() != pl.col("failure_reason").is_null(),
        )
        .drop(["true_activations", "simulated_activations", "digit_mass"])
        .to_pandas()
    )


def simulations_suite(name: str, scale: int, keys: list[str]) -> "gx.ExpectationSuite":
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name=name,
        expectations=[
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["calibration", "valid", "test"]),
            gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=["top", "random"]),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="n_true", column_B="n_simulated"),
            gxe.ExpectColumnValuesToBeBetween(column="simulated_min", min_value=0, max_value=scale),
            gxe.ExpectColumnValuesToBeBetween(column="simulated_max", min_value=0, max_value=scale),
            gxe.ExpectColumnValuesToBeBetween(column="n_not_finite", min_value=0, max_value=0),
            gxe.ExpectColumnValuesToBeInSet(column="exactly_one_outcome", value_set=[True]),
        ],
    )


def scores_frame(table: pa.Table) -> pd.DataFrame:
    """Adds whether the headline score and its failure reason exclude each other, whether
    `score_reasons` names exactly the null score columns, and how many rows of the neuron are
    marked best (one when any explanation can be ranked, by its selection AUC or its simulation
    score, else none)."""
    frame = _frame(table)
    has_score = pl.col("top_and_random_score").is_not_null()
    rankable = has_score | pl.col("selection_auc").is_not_null()
    return frame.with_columns(
        score_xor_reason=has_score != pl.col("failure_reason").is_not_null(),
        score_reasons_complete=pl.all_horizontal(
            pl.col(name).is_null() == pl.col("score_reasons").str.json_path_match(f"$.{name}").is_not_null()
            for name in REASONED_COLUMNS
        ),
        best_rows=pl.col("is_best").cast(pl.Int64).sum().over(["layer", "neuron"]),
        expected_best_rows=rankable.any().over(["layer", "neuron"]).cast(pl.Int64),
        best_has_score=~pl.col("is_best") | rankable,
    ).to_pandas()


def scores_suite(d_mlp: int) -> "gx.ExpectationSuite":
    import great_expectations as gx
    import great_expectations.expectations as gxe

    correlations = [c for c in SCORE_COLUMNS if c.endswith("score")]
    return gx.ExpectationSuite(
        name="scores",
        expectations=[
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="neuron", min_value=0, max_value=d_mlp - 1),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["layer", "neuron", "explanation_id"]),
            *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=-1, max_value=1) for c in correlations],
            *[
                gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1)
                for c in ("embedding_auc", "embedding_null", "selection_auc")
            ],
            *[
                gxe.ExpectColumnValuesToBeBetween(column=c, min_value=-1, max_value=1)
                for c in ("lookup_score", "lookup_null")
            ],
            gxe.ExpectColumnValuesToBeBetween(column="rsquared", max_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="absolute_dev_explained", max_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="score_xor_reason", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="score_reasons_complete", value_set=[True]),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="best_rows", column_B="expected_best_rows"),
            gxe.ExpectColumnValuesToBeInSet(column="best_has_score", value_set=[True]),
        ],
    )


def explanation_checks(d_mlp: int, samples: int) -> dict[str, Check]:
    """The suite of one layer's explanations."""
    return {"explanations": Check("explanations", explanations_frame, explanations_suite(d_mlp, samples))}


def score_checks(scale: int, d_mlp: int) -> dict[str, Check]:
    """The suites of one layer's simulations, control simulations and scores."""
    keys = ["layer", "neuron", "explanation_id", "sequence_id"]
    return {
        "simulations": Check("simulations", simulations_frame, simulations_suite("simulations", scale, keys)),
        "control": Check(
            "control_simulations", simulations_frame, simulations_suite("control_simulations", scale, keys)
        ),
        "scores": Check("scores", scores_frame, scores_suite(d_mlp)),
    }
