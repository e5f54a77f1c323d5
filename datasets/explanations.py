"""Contracts of the explanation, simulation and score datasets (each file also holds its `layer`,
as int32 like the hive partition key, so a whole dataset reads back with one schema).

- `explanations/<run>/layer=<L>/part-00000.parquet`: one row per (layer, neuron, explanation_id):
  the explanation, or null and the failure reason.
- `simulations/<run>/layer=<L>/...`: one row per (layer, neuron, explanation_id, sequence_id):
  split, kind, true and simulated activations (one value per token; simulated null when the
  simulation failed, with its reason).
- `control_simulations/<run>/layer=<L>/...`: the permutation control: each explanation simulated on
  the valid records of another neuron (`record_layer`, `record_neuron`).
- `scores/<run>/layer=<L>/...`: one row per (layer, neuron, explanation_id): every score (null with
  a reason where undefined), the control's score, and whether it is the neuron's best on `valid`.

Run ids are content-addressed (inputs and parameters), so a rerun finds its own output.
"""

import hashlib
import json

import pyarrow as pa

FORMAT_VERSION = 2

EXPLANATIONS_SCHEMA = pa.schema(
    [
        pa.field("layer", pa.int32(), nullable=False),
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("explanation_id", pa.int16(), nullable=False),
        pa.field("explanation", pa.string()),
        pa.field("failure_reason", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("prompt_tokens", pa.int32(), nullable=False),
        pa.field("completion_tokens", pa.int32(), nullable=False),
    ]
)

_SIMULATION_FIELDS = [
    pa.field("layer", pa.int32(), nullable=False),
    pa.field("neuron", pa.int32(), nullable=False),
    pa.field("explanation_id", pa.int16(), nullable=False),
    pa.field("sequence_id", pa.int64(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("true_activations", pa.list_(pa.float32()), nullable=False),
    pa.field("simulated_activations", pa.list_(pa.float32())),
    pa.field("digit_mass", pa.list_(pa.float32())),
    pa.field("failure_reason", pa.string()),
]
SIMULATIONS_SCHEMA = pa.schema(_SIMULATION_FIELDS)
CONTROL_SCHEMA = pa.schema(
    [
        *_SIMULATION_FIELDS[:3],
        pa.field("record_layer", pa.int16(), nullable=False),
        pa.field("record_neuron", pa.int32(), nullable=False),
        *_SIMULATION_FIELDS[3:],
    ]
)

SCORE_COLUMNS = (
    "top_and_random_score",
    "random_only_score",
    "test_score",
    "calibration_score",
    "rsquared",
    "absolute_dev_explained",
    "null_score",
)
EXCERPT_SCORE_COLUMNS = (
    "embedding_auc",
    "embedding_null",
    "selection_auc",
    "lookup_score",
    "lookup_null",
)
"""Embedding AUC on the neuron's valid/test spans and on its control partner's (the null); the
embedding AUC on train/calibration spans that picks the best sample; the token-lookup baseline's
top-and-random score on the neuron and on its partner (per neuron, repeated on each row)."""
SCORES_SCHEMA = pa.schema(
    [
        pa.field("layer", pa.int32(), nullable=False),
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("explanation_id", pa.int16(), nullable=False),
        pa.field("explanation", pa.string()),
        *[pa.field(name, pa.float64()) for name in SCORE_COLUMNS],
        pa.field("failure_reason", pa.string()),
        pa.field("null_failure_reason", pa.string()),
        pa.field("null_layer", pa.int16()),
        pa.field("null_neuron", pa.int32()),
        pa.field("mean_digit_mass", pa.float64()),
        *[pa.field(name, pa.float64()) for name in EXCERPT_SCORE_COLUMNS],
        pa.field("embedding_failure_reason", pa.string()),
        pa.field("embedding_null_failure_reason", pa.string()),
        *[
            pa.field(f"{scorer}_{column}", pa.float64() if column != "failure_reason" else pa.string())
            for scorer in ("detection", "fuzzing")
            for column in ("auc", "null", "failure_reason")
        ],
        pa.field("is_best", pa.bool_(), nullable=False),
    ]
)


def run_id(prefix: str, *parts: object) -> str:
    key = json.dumps([FORMAT_VERSION, *parts], sort_keys=True, default=str)
    return f"{prefix}-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def explanations_path(run: str) -> str:
    return f"explanations/{run}"


def simulations_path(run: str) -> str:
    return f"simulations/{run}"


def control_path(run: str) -> str:
    return f"control_simulations/{run}"


def scores_path(run: str) -> str:
    return f"scores/{run}"
