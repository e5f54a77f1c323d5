"""Contracts of the activation records and neuron statistics datasets.

- `activations/<model_slug>/<run_id>/layer=<L>/part-00000.parquet`: one row per (neuron, kept
  excerpt): kind (top | bottom | random), rank, split, sequence_id, max/min activation and the
  per-token activations.
- `neuron_stats/<model_slug>/<run_id>/layer=<L>/part-00000.parquet`: one row per neuron;
  `short_records` flags a neuron with fewer bottom or random records than asked (tiny corpus).

Each layer partition is a shard, committed on its own (`layer=<L>/_manifest.json`); the run's
`_manifest.json` is written when every requested layer is committed.
"""

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from neuronatlas.core.records import TOP_SPLITS, KindRecords, layer_records
from neuronatlas.core.stats import NeuronStatistics

FORMAT_VERSION = 1
KIND_ORDER = {"top": 0, "bottom": 1, "random": 2}

RECORDS_SCHEMA = pa.schema(
    [
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("rank", pa.int16(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("sequence_id", pa.int64(), nullable=False),
        pa.field("max_activation", pa.float32(), nullable=False),
        pa.field("min_activation", pa.float32(), nullable=False),
        pa.field("activations", pa.list_(pa.float32()), nullable=False),
    ]
)

STATS_SCHEMA = pa.schema(
    [
        pa.field("neuron", pa.int32(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
        pa.field("variance", pa.float64(), nullable=False),
        pa.field("max", pa.float32(), nullable=False),
        pa.field("min", pa.float32(), nullable=False),
        pa.field("frac_positive", pa.float64(), nullable=False),
        pa.field("n_tokens", pa.int64(), nullable=False),
        pa.field("n_top", pa.int16(), nullable=False),
        pa.field("n_bottom", pa.int16(), nullable=False),
        pa.field("n_random", pa.int16(), nullable=False),
        pa.field("short_records", pa.bool_(), nullable=False),
    ]
)


def run_id(model_identity: str, corpus_id: str, parameters: dict[str, object]) -> str:
    """Content-addressed: the same model, corpus and parameters give the same run (and resume it).
    Layers are not part of it: extracting more layers later adds partitions to the same run."""
    key = json.dumps([FORMAT_VERSION, model_identity, corpus_id, parameters], sort_keys=True)
    return "x-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def records_path(model_slug: str, run: str) -> str:
    return f"activations/{model_slug}/{run}"


def stats_path(model_slug: str, run: str) -> str:
    return f"neuron_stats/{model_slug}/{run}"


def layer_partition(dataset: str, layer: int) -> str:
    return f"{dataset}/layer={layer}"


def records_table(records: list[KindRecords], sequence_ids: np.ndarray) -> pa.Table:
    """All kinds of one layer's records, ordered by neuron, then kind (top, bottom, random), then
    rank. Ordered in numpy before the Arrow table is built: sorting the list column in Arrow
    would copy it again. Kind and split are built in Arrow from small integer codes (no Python
    strings per row)."""
    neuron = np.concatenate([r.neuron for r in records])
    kind_code = np.concatenate([np.full(len(r.neuron), KIND_ORDER[r.kind], dtype=np.int8) for r in records])
    rank = np.concatenate([r.rank for r in records])
    order = np.lexsort((rank, kind_code, neuron))
    activations = np.concatenate([r.activations for r in records]).astype(np.float32, copy=False)[order]  # (R, T)
    window = activations.shape[1]
    offsets = np.arange(0, activations.size + 1, window, dtype=np.int32)
    extremes = torch.from_numpy(activations)  # a view: two threads for the row maxima and minima
    return pa.table(
        {
            "neuron": neuron[order],
            "kind": _names(KIND_ORDER, kind_code[order]),
            "rank": rank[order],
            "split": _names(TOP_SPLITS, np.concatenate([r.split_code for r in records])[order]),
            "sequence_id": sequence_ids[np.concatenate([r.excerpt_index for r in records])[order]],
            "max_activation": extremes.amax(dim=1).numpy(),
            "min_activation": extremes.amin(dim=1).numpy(),
            "activations": pa.ListArray.from_arrays(pa.array(offsets), pa.array(activations.reshape(-1))),
        },
        schema=RECORDS_SCHEMA,
    )


def _names(names: Iterable[str], codes: np.ndarray) -> pa.Array:
    """A string array: `names` taken at `codes`."""
    return pa.array(list(names), pa.string()).take(pa.array(codes))


def stats_table(stats: NeuronStatistics, records: list[KindRecords], k: int, random_k: int) -> pa.Table:
    n_neurons = len(stats.mean)
    counts = {r.kind: np.bincount(r.neuron, minlength=n_neurons) for r in records}
    return pa.table(
        {
            "neuron": np.arange(n_neurons, dtype=np.int32),
            "mean": stats.mean.cpu().numpy(),
            "variance": stats.variance.cpu().numpy(),
            "max": stats.max.cpu().numpy(),
            "min": stats.min.cpu().numpy(),
            "frac_positive": stats.frac_positive.cpu().numpy(),
            "n_tokens": np.full(n_neurons, stats.n_tokens, dtype=np.int64),
            "n_top": counts["top"].astype(np.int16),
            "n_bottom": counts["bottom"].astype(np.int16),
            "n_random": counts["random"].astype(np.int16),
            "short_records": (counts["top"] < k) | (counts["bottom"] < k) | (counts["random"] < random_k),
        },
        schema=STATS_SCHEMA,
    )


def layer_tables(
    accumulator: Any, pool: np.ndarray, sequence_ids: np.ndarray, k: int, random_k: int
) -> tuple[Any, Any]:
    """(records, stats) tables of one layer, from its `LayerAccumulator` (moved to the CPU);
    `sequence_ids` names the extraction's excerpts in order."""
    records = layer_records(
        accumulator.top.indices.cpu(),
        accumulator.top.activations.cpu(),
        accumulator.bottom.indices.cpu(),
        accumulator.bottom.activations.cpu(),
        pool,
        accumulator.pool_activations.cpu(),
        k,
        random_k,
    )
    stats = stats_table(accumulator.stats.result(), records, k, random_k)
    return records_table(records, sequence_ids), stats


def run_manifest(
    run: str,
    source: Any,
    corpus_id: str,
    corpus_manifest: dict[str, Any],
    layers: list[int],
    n_layers: int,
    d_mlp: int,
    parameters: dict[str, Any],
    details: dict[str, Any],
) -> dict[str, Any]:
    """An activation run's manifest: the model (`ModelSource`) with its checksum, the corpus with its
    fingerprint, the committed layers, the parameters, and `details` (device, timings, code
    version, picture, neuron definition, dataset URIs)."""
    return {
        "run_id": run,
        "model": source.spec,
        "model_slug": source.slug,
        "hf_id": source.hf_id,
        "model_checksum": source.checksum,
        "corpus_id": corpus_id,
        "corpus_fingerprint": corpus_manifest["source"]["fingerprint"],
        "layers": layers,
        "n_layers_in_model": n_layers,
        "d_mlp": d_mlp,
        "parameters": parameters,
        **details,
    }
