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
  a reason where undefined), the control's score, and whether it is the neuron's best sample (chosen
  on train/calibration spans, never valid or test: `core.scorers.best_sample`). Why each null score
  is null is in `score_reasons`: a JSON object from each null score column's name to its reason
  (every scorer's, the nulls and the baseline's too), null when every score is set
  (`failure_reason` repeats the headline's).

Run ids are content-addressed (inputs and parameters), so a rerun finds its own output.
"""

import hashlib
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neuronatlas.core.explain import ExplainedNeuron, Record, Simulation
from neuronatlas.core.scorers import SCORERS, NeuronOutcome, result_or_not_run
from neuronatlas.core.scorers.simulation import SimulationResult
from neuronatlas.core.scoring import SCORE_NAMES

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

SCORE_COLUMNS = (*SCORE_NAMES, "null_score")
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
REASONED_COLUMNS = (
    *SCORE_COLUMNS,
    *EXCERPT_SCORE_COLUMNS,
    *(f"{scorer}_{column}" for scorer in ("detection", "fuzzing") for column in ("auc", "null")),
)
"""Every score column of the scores table: each null one is named in `score_reasons`."""
SCORES_SCHEMA = pa.schema(
    [
        pa.field("layer", pa.int32(), nullable=False),
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("explanation_id", pa.int16(), nullable=False),
        pa.field("explanation", pa.string()),
        *[pa.field(name, pa.float64()) for name in SCORE_COLUMNS],
        pa.field("failure_reason", pa.string()),
        pa.field("score_reasons", pa.string()),
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


def explanations_digest(table: pa.Table, layer: int) -> str:
    """Fingerprint of a layer's explanations (texts and failures): scores made from other
    explanations (before an explain rerun retried failed rows) are redone."""
    rows = table.filter(pc.equal(table["layer"], layer)).sort_by(
        [("neuron", "ascending"), ("explanation_id", "ascending")]
    )
    picked = rows.select(["neuron", "explanation_id", "explanation", "failure_reason"]).to_pylist()
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def explanations_path(run: str) -> str:
    return f"explanations/{run}"


def simulations_path(run: str) -> str:
    return f"simulations/{run}"


def control_path(run: str) -> str:
    return f"control_simulations/{run}"


def scores_path(run: str) -> str:
    return f"scores/{run}"


def explanations_table(layer: int, explained: list[ExplainedNeuron]) -> pa.Table:
    """One layer's explanation rows."""
    rows = [
        {
            "layer": layer,
            "neuron": neuron.neuron,
            "explanation_id": row.explanation_id,
            "explanation": row.explanation,
            "failure_reason": row.failure_reason,
            "answer": row.answer,
            "prompt_tokens": neuron.prompt_tokens,
            "completion_tokens": neuron.completion_tokens,
        }
        for neuron in explained
        for row in neuron.rows
    ]
    return pa.Table.from_pylist(rows, schema=EXPLANATIONS_SCHEMA)


def layer_tables(layer: int, outcomes: list[NeuronOutcome]) -> dict[str, pa.Table]:
    """The simulations, control and scores tables of one layer's scored neurons (scores last: its
    commit marks the layer done)."""
    simulations: list[dict[str, Any]] = []
    control: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    for neuron in outcomes:
        for index, outcome in enumerate(neuron.explanations):
            key = {"layer": layer, "neuron": neuron.neuron, "explanation_id": outcome.explanation_id}
            simulated = outcome.results.get("simulation")
            if isinstance(simulated, SimulationResult):
                simulations += _simulation_rows(key, simulated.excerpts, simulated.simulations)
                if neuron.control_of is not None:
                    extra = {"record_layer": neuron.control_of[0], "record_neuron": neuron.control_of[1]}
                    control += _simulation_rows(
                        {**key, **extra}, simulated.control_excerpts, simulated.control_simulations
                    )
            row = {**key, "explanation": outcome.explanation, "is_best": index == neuron.best}
            reasons: dict[str, str] = {}
            for result in [*(result_or_not_run(outcome, name) for name in SCORERS), neuron.baseline]:
                row |= result.columns()
                reasons |= result.reasons()
            row["score_reasons"] = json.dumps(reasons) if reasons else None
            control_of = neuron.control_of
            row |= {
                "null_layer": control_of[0] if control_of else None,
                "null_neuron": control_of[1] if control_of else None,
            }
            scores.append(row)
    return {
        "simulations": pa.Table.from_pylist(simulations, schema=SIMULATIONS_SCHEMA),
        "control": pa.Table.from_pylist(control, schema=CONTROL_SCHEMA),
        "scores": pa.Table.from_pylist(scores, schema=SCORES_SCHEMA),
    }


def _simulation_rows(
    key: dict[str, Any], excerpts: list[Record], simulations: list[Simulation]
) -> list[dict[str, Any]]:
    return [
        {
            **key,
            "sequence_id": record.sequence_id,
            "split": record.split,
            "kind": record.kind,
            "true_activations": float_list(record.activations),
            "simulated_activations": float_list(simulation.values),
            "digit_mass": float_list(simulation.digit_mass),
            "failure_reason": simulation.failure,
        }
        for record, simulation in zip(excerpts, simulations, strict=True)
    ]


def float_list(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]
