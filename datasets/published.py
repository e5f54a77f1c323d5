"""Contract of the published table, `published/atlas`: a Delta table, one row per
(model, layer, neuron, sign; the sign is "positive" unless `explain --sign negative`) with the
neuron's best explanation, its scores, the run-level real-vs-null gap of each scorer, and the
lineage of the row (every run and fingerprint it came from).

Every publish is a new table version (a Delta MERGE): a row is replaced only when the new
explanation ranks higher on the same criterion (`rank_by`, `rank_score`: how the pipeline picks
the best of n samples), or was ranked by another criterion; other rows are kept as they were.
"""

import pyarrow as pa

TABLE_PATH = "published/atlas"
KEY = ("model", "layer", "neuron", "sign")
FORMAT_VERSION = 1
PUBLISH_KEY = "neuronatlas_publish"
"""Commit metadata naming the publish a table version came from."""
ROLLED_BACK_KEY = "neuronatlas_rolled_back"
"""Commit metadata of a restore that undid a publish whose table failed its suite."""

GAP_SCORERS = ("simulation", "embedding", "detection", "fuzzing")
"""Scorers whose run-level gap (real minus permutation null, best sample per neuron) each row
carries: the gap, its 95% CI, the neurons it is over, and whether it is significant (CI above 0
over at least `core.validity.MIN_GAP_NEURONS`)."""
ROW_SCORES = (
    "top_and_random_score",
    "random_only_score",
    "test_score",
    "null_score",
    "embedding_auc",
    "embedding_null",
    "detection_auc",
    "detection_null",
    "fuzzing_auc",
    "fuzzing_null",
    "lookup_score",
    "lookup_null",
)
LINEAGE = (
    "publish_id",
    "scores_run",
    "explanations_run",
    "activations_run",
    "corpus_id",
    "corpus_fingerprint",
    "model_checksum",
    "explainer",
    "simulator",
    "prompt_version",
    "scorer_version",
    "code_version",
    "prefect_flow_run_id",
)

SCHEMA = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("layer", pa.int32(), nullable=False),
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("sign", pa.string(), nullable=False),
        pa.field("explanation", pa.string(), nullable=False),
        pa.field("explanation_id", pa.int16(), nullable=False),
        *[pa.field(name, pa.float64()) for name in ROW_SCORES],
        pa.field("failure_reason", pa.string()),
        pa.field("rank_by", pa.string(), nullable=False),
        pa.field("rank_score", pa.float64(), nullable=False),
        *[
            field
            for scorer in GAP_SCORERS
            for field in (
                pa.field(f"{scorer}_run_gap", pa.float64()),
                pa.field(f"{scorer}_run_gap_low", pa.float64()),
                pa.field(f"{scorer}_run_gap_high", pa.float64()),
                pa.field(f"{scorer}_run_significant", pa.bool_()),
                pa.field(f"{scorer}_run_neurons", pa.int32()),
            )
        ],
        *[pa.field(name, pa.string(), nullable=name in {"simulator", "prefect_flow_run_id"}) for name in LINEAGE],
        pa.field("published_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def publish_id(scores_run: str) -> str:
    """A publish is named after the score run it publishes (one score run publishes once)."""
    return "p-" + scores_run.removeprefix("s-")
