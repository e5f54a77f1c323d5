"""Suite for the corpus dataset."""

from typing import TYPE_CHECKING

import pandas as pd
import polars as pl
import pyarrow as pa

from neuronatlas.adapters.validation import Check

if TYPE_CHECKING:
    import great_expectations as gx

SUITE_NAME = "corpus"


def validation_frame(table: pa.Table) -> pd.DataFrame:
    """Scalar columns of the corpus, plus per-row facts about its token lists."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    derived = frame.with_columns(
        n_token_ids=pl.col("token_ids").list.len(),
        n_tokens=pl.col("tokens").list.len(),
        min_token_id=pl.col("token_ids").list.min(),
        max_token_id=pl.col("token_ids").list.max(),
        null_list_elements=(
            pl.col("token_ids").list.eval(pl.element().is_null()).list.sum()
            + pl.col("tokens").list.eval(pl.element().is_null()).list.sum()
        ),
    ).drop("token_ids", "tokens")
    return derived.to_pandas()


def suite(window: int, vocab_size: int) -> "gx.ExpectationSuite":
    """Unique ids, no nulls, every window exactly `window` tokens, ids inside the vocabulary."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="sequence_id"),
        *[
            gxe.ExpectColumnValuesToNotBeNull(column=column)
            for column in ["sequence_id", "source", "doc_id", "window", "n_token_ids", "n_tokens"]
        ],
        gxe.ExpectColumnValuesToBeBetween(column="null_list_elements", min_value=0, max_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="n_token_ids", min_value=window, max_value=window),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="n_token_ids", column_B="n_tokens"),
        gxe.ExpectColumnValuesToBeBetween(column="min_token_id", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="max_token_id", max_value=vocab_size - 1),
        gxe.ExpectColumnValuesToBeBetween(column="window", min_value=0),
    ]
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations)


def check(window: int, vocab_size: int) -> Check:
    """The corpus suite on the corpus as written."""
    return Check("corpus", validation_frame, suite(window, vocab_size))
