"""The suite that guards the published table: run on the rows about to be merged and on the
whole table as the new version reads back."""

from typing import TYPE_CHECKING

import pandas as pd
import polars as pl
import pyarrow as pa

from neuronatlas.core.summary import MIN_GAP_NEURONS
from neuronatlas.datasets.published import GAP_SCORERS, KEY, LINEAGE, ROW_SCORES

if TYPE_CHECKING:
    import great_expectations as gx

REASONS_SINCE = 4
"""The scorer version from which `score_reasons` names every null score of a row."""
AUCS = ("embedding_auc", "embedding_null", "detection_auc", "detection_null", "fuzzing_auc", "fuzzing_null")
CORRELATIONS = ("top_and_random_score", "random_only_score", "test_score", "null_score", "lookup_score", "lookup_null")


def published_frame(table: pa.Table) -> pd.DataFrame:
    """Adds whether each gap's interval holds the gap and its flag says whether it excludes 0 over
    enough neurons, and whether `score_reasons` names exactly the null scores."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    checks = {}
    for scorer in GAP_SCORERS:
        gap, low, high = (pl.col(f"{scorer}_run_gap{end}") for end in ("", "_low", "_high"))
        flag, neurons = pl.col(f"{scorer}_run_significant"), pl.col(f"{scorer}_run_neurons")
        consistent = (low <= gap) & (gap <= high) & (flag == ((low > 0) & (neurons >= MIN_GAP_NEURONS)))
        checks[f"{scorer}_gap_consistent"] = pl.when(gap.is_null()).then(flag.is_null()).otherwise(consistent)
    # every null score with its reason, from scorer version 4 (earlier rows kept their contract)
    reasons = pl.col("score_reasons")
    complete = pl.all_horizontal(
        pl.col(c).is_null() == reasons.str.json_path_match(f"$.{c}").is_not_null() for c in ROW_SCORES
    )
    since = pl.col("scorer_version").cast(pl.Int64, strict=False).fill_null(0) >= REASONS_SINCE
    checks["score_reasons_complete"] = ~since | complete
    return frame.with_columns(**checks).to_pandas()


def published_suite() -> "gx.ExpectationSuite":
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name="published",
        expectations=[
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=list(KEY)),
            gxe.ExpectColumnValuesToBeBetween(column="layer", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="neuron", min_value=0),
            gxe.ExpectColumnValuesToBeInSet(column="sign", value_set=["positive", "negative"]),
            gxe.ExpectColumnValuesToNotBeNull(column="explanation"),
            gxe.ExpectColumnValuesToNotMatchRegex(column="explanation", regex=r"^\s*$"),
            gxe.ExpectColumnValuesToNotBeNull(column="rank_score"),
            *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=-1, max_value=1) for c in CORRELATIONS],
            *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1) for c in AUCS],
            *[gxe.ExpectColumnValuesToBeInSet(column=f"{s}_gap_consistent", value_set=[True]) for s in GAP_SCORERS],
            gxe.ExpectColumnValuesToBeInSet(column="score_reasons_complete", value_set=[True]),
            *[
                gxe.ExpectColumnValuesToNotBeNull(column=name)
                for name in LINEAGE
                if name not in {"simulator", "prefect_flow_run_id"}
            ],
            gxe.ExpectColumnValuesToMatchRegex(column="model_checksum", regex=r"^[0-9a-f]{64}$"),
            gxe.ExpectColumnValuesToMatchRegex(column="corpus_fingerprint", regex=r"^[0-9a-f]{64}$"),
        ],
    )
