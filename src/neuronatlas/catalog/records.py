"""Reading a run's inputs once: corpus tokens and windows, and neurons' records with their tokens.

A stage that works layer by layer opens one `Corpora` for the run and passes it along, so the
corpus is read once, not once per layer.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.runs import ActivationRun
from neuronatlas.core.explain import NeuronRecords, Record
from neuronatlas.datasets import activations as activations_contract
from neuronatlas.datasets import corpus as corpus_contract

SIGNS = ("positive", "negative")


class Corpora:
    """Decoded tokens of corpus windows; each corpus read once, then kept."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._tables: dict[str, pa.Table] = {}

    def tokens(self, corpus_id: str, sequence_ids: Iterable[int] | pa.Array | pa.ChunkedArray) -> dict[int, Any]:
        """sequence id -> the window's decoded tokens (a tuple of strings)."""
        if not isinstance(sequence_ids, pa.Array | pa.ChunkedArray):
            sequence_ids = pa.array(sorted(sequence_ids), pa.int64())
        if len(sequence_ids) == 0:
            return {}
        if corpus_id not in self._tables:
            corpus = self.storage.read_parquet(corpus_contract.corpus_path(corpus_id), schema=corpus_contract.SCHEMA)
            self._tables[corpus_id] = corpus.select(["sequence_id", "tokens"])
        return corpus_contract.tokens_by_sequence(self._tables[corpus_id], sequence_ids)

    def __getstate__(self) -> dict[str, Any]:
        """Sent to a Dask worker without the tables: the worker reads what it needs itself."""
        return {"storage": self.storage, "_tables": {}}


@dataclass(frozen=True)
class Excerpts:
    """The corpus windows an extraction runs over, in a fixed order (by sequence_id)."""

    token_ids: np.ndarray
    """(N, T) token ids."""
    sequence_ids: np.ndarray
    """(N,) sequence id of each row."""


def read_excerpts(storage: Storage, corpus_id: str, limit: int | None) -> Excerpts:
    """The corpus ordered by sequence_id (a stable, content-derived shuffle); the first `limit`."""
    table = storage.read_parquet(corpus_contract.corpus_path(corpus_id), schema=corpus_contract.SCHEMA)
    table = table.select(["sequence_id", "token_ids"]).sort_by("sequence_id")
    if limit is not None:
        table = table.slice(0, limit)
    window = len(table["token_ids"][0]) if table.num_rows else 0
    flat = table["token_ids"].combine_chunks().flatten().to_numpy()
    return Excerpts(flat.reshape(table.num_rows, window).astype(np.int64), table["sequence_id"].to_numpy())


def neuron_records(
    storage: Storage, run: ActivationRun, layer: int, neurons: list[int], sign: str, corpora: Corpora
) -> list[NeuronRecords]:
    """Top and random records of `neurons` of one layer, with the decoded tokens of each excerpt.
    `sign="negative"` explains the other side of a gated MLP's neuron: its bottom records stand as
    the top ones and every activation is negated (the most negative becomes the strongest)."""
    table = storage.read_parquet(
        activations_contract.layer_partition(run.records, layer), schema=activations_contract.RECORDS_SCHEMA
    )
    skipped = "bottom" if sign == "positive" else "top"
    wanted = pc.and_(pc.is_in(table["neuron"], pa.array(neurons, pa.int32())), pc.not_equal(table["kind"], skipped))
    table = table.filter(wanted)
    tokens = corpora.tokens(run.manifest["corpus_id"], table["sequence_id"])
    by_neuron: dict[int, list[Record]] = {neuron: [] for neuron in neurons}
    window = len(table["activations"][0]) if table.num_rows else 0
    activations = table["activations"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, window)
    if sign == "negative":
        activations = -activations
    columns = table.select(["neuron", "kind", "split", "rank", "sequence_id"]).to_pydict()
    for row, (neuron, kind, split, rank, sequence_id) in enumerate(zip(*columns.values(), strict=True)):
        shown = "top" if kind == "bottom" else kind
        by_neuron[neuron].append(Record(shown, split, rank, sequence_id, tokens[sequence_id], activations[row]))
    return [NeuronRecords(layer, neuron, tuple(by_neuron[neuron])) for neuron in neurons]


def records_with_partners(
    storage: Storage,
    run: ActivationRun,
    layer: int,
    neurons: list[int],
    sign: str,
    corpora: Corpora,
    partner: dict[tuple[int, int], tuple[int, int]],
) -> list[NeuronRecords]:
    """The records of `neurons` of one layer and of each one's control partner (any layer), each
    partition read once."""
    wanted: dict[int, set[int]] = {layer: set(neurons)}
    for neuron in neurons:
        if (layer, neuron) in partner:
            other_layer, other = partner[(layer, neuron)]
            wanted.setdefault(other_layer, set()).add(other)
    found = []
    for read_layer, read_neurons in wanted.items():
        found += neuron_records(storage, run, read_layer, sorted(read_neurons), sign, corpora)
    return found
