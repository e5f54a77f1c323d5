"""Contract of the published table, `published/atlas`: a Delta table, one row per
(model, layer, neuron, sign; the sign is "positive" unless `explain --sign negative`) with the
neuron's best explanation, its scores, the run-level real-vs-null gap of each scorer, and the
lineage of the row (every run and fingerprint it came from). `failure_reason` says why the headline
simulation score is null, `score_reasons` why each null score is (a JSON object from column name to
reason, as in the scores table; complete from scorer version 4, simulation scores only in version
3; tables created before it joined the contract read it back null).

Every publish is a new table version (a Delta MERGE): a row is replaced only when the new
explanation ranks higher on the same criterion (`rank_by`, `rank_score`: how the pipeline picks
the best of n samples), or was ranked by another criterion; other rows are kept as they were.
"""

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

TABLE_PATH = "published/atlas"
PUBLISHES = "published/_publishes"
"""One record per publish: `<publish>.json`, written after its version passed the table's suite."""
KEY = ("model", "layer", "neuron", "sign")
FORMAT_VERSION = 1
PUBLISH_KEY = "neuronatlas_publish"
"""Commit metadata naming the publish a table version came from."""
ROLLED_BACK_KEY = "neuronatlas_rolled_back"
"""Commit metadata of a restore that undid a publish whose table failed its suite."""

GAP_SCORERS = ("simulation", "embedding", "detection", "fuzzing")
"""Scorers whose run-level gap (real minus permutation null, best sample per neuron) each row
carries: the gap, its 95% CI, the neurons it is over, and whether it is significant (CI above 0
over at least `core.summary.MIN_GAP_NEURONS`)."""
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
        pa.field("score_reasons", pa.string()),
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


def publish_record(
    publish_id: str, table: str, version: int, offered: int, inserted: int, updated: int
) -> dict[str, Any]:
    """The head of `published/_publishes/<publish>.json`: which table version a publish made, and
    what it offered and changed (the flow adds the suites' results, the lineage and the run)."""
    return {
        "publish_id": publish_id,
        "table": table,
        "version": version,
        "rows_offered": offered,
        "inserted": inserted,
        "updated": updated,
    }


def published_rows(chain: list[Any], scores: pa.Table, publish_id: str, flow_run_id: str | None) -> pa.Table:
    """The best explanation of every neuron of the score run (`chain`: its `catalog.lineage` links),
    with its scores, the run's gap per scorer and the row's lineage. Neurons with no ranked
    explanation are not published."""
    links = {link.dataset: link for link in chain}
    score_manifest = links["scores"].manifest
    activations = links["activations"].manifest
    gaps = score_manifest["summary"]["scorers"]
    best = scores.filter(pc.and_(scores["is_best"], pc.is_valid(scores["explanation"]))).to_pylist()
    now = datetime.now(UTC)
    rows = []
    for row in best:
        rank_by = "selection_auc" if row["selection_auc"] is not None else "top_and_random_score"
        if row[rank_by] is None:
            continue
        gap_columns: dict[str, Any] = {}
        for scorer in GAP_SCORERS:
            gap = gaps.get(scorer)
            gap_columns[f"{scorer}_run_gap"] = gap["gap"] if gap else None
            gap_columns[f"{scorer}_run_gap_low"] = gap["ci95"][0] if gap else None
            gap_columns[f"{scorer}_run_gap_high"] = gap["ci95"][1] if gap else None
            gap_columns[f"{scorer}_run_significant"] = gap["significant"] if gap else None
            gap_columns[f"{scorer}_run_neurons"] = gap["n"] if gap else None
        rows.append(
            {
                "model": activations["model_slug"],
                "layer": row["layer"],
                "neuron": row["neuron"],
                "sign": score_manifest.get("sign", "positive"),
                "explanation": row["explanation"],
                "explanation_id": row["explanation_id"],
                **{name: row[name] for name in ROW_SCORES},
                "failure_reason": row["failure_reason"],
                "score_reasons": published_reasons(row["score_reasons"]),
                "rank_by": rank_by,
                "rank_score": row[rank_by],
                **gap_columns,
                "publish_id": publish_id,
                "scores_run": links["scores"].run_id,
                "explanations_run": links["explanations"].run_id,
                "activations_run": links["activations"].run_id,
                "corpus_id": links["corpus"].run_id,
                "corpus_fingerprint": activations["corpus_fingerprint"],
                "model_checksum": activations["model_checksum"],
                "explainer": score_manifest["explainer"],
                "simulator": score_manifest.get("simulator"),
                "prompt_version": score_manifest["parameters"]["prompt_version"],
                "scorer_version": score_manifest["parameters"].get("scorer_version", "1"),
                "code_version": score_manifest["code_version"],
                "prefect_flow_run_id": flow_run_id,
                "published_at": now,
            }
        )
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def published_reasons(score_reasons: str | None) -> str | None:
    """The scores table's `score_reasons` narrowed to the scores a row carries (a JSON
    object from each null one's column name to its reason; None when none is null)."""
    kept = {name: why for name, why in json.loads(score_reasons or "{}").items() if name in ROW_SCORES}
    return json.dumps(kept) if kept else None


REPLACE_WHEN = "target.rank_by <> source.rank_by OR source.rank_score > target.rank_score"
"""A rerun replaces a published row only when its explanation ranks higher on the same criterion
(or was ranked by another one); otherwise the row stays as published."""
