"""What the viewer shows, read back from a root: the published rows of one table version and, per
neuron, everything its page needs (the other sampled explanations with their scores, the scored
excerpts with real and simulated activations token by token, the neuron's statistics and the
row's lineage). Reads are grouped by (score run, layer): one Parquet read per dataset partition,
however many neurons a layer has."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from neuronatlas.adapters.delta import DeltaLocation
from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.lineage import lineage_chain
from neuronatlas.catalog.records import Corpora
from neuronatlas.catalog.runs import activation_runs
from neuronatlas.datasets import activations as activations_contract
from neuronatlas.datasets import explanations as contract
from neuronatlas.datasets import published
from neuronatlas.errors import InputError

SCORE_FIELDS = published.ROW_SCORES
STAT_FIELDS = ("mean", "variance", "max", "min", "frac_positive", "n_tokens")
NEURON = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class Excerpt:
    """One scored excerpt: its tokens, the real activations and (when the run simulated) the
    simulated ones, as the scorer saw them (negated for a negative-sign row)."""

    kind: str
    split: str
    sequence_id: int
    tokens: tuple[str, ...]
    real: tuple[float, ...]
    simulated: tuple[float, ...] | None
    failure_reason: str | None = None


@dataclass
class NeuronPage:
    row: dict[str, Any]
    """The published row."""
    explanations: list[dict[str, Any]] = field(default_factory=list)
    """Every sample of the neuron in its score run: id, text (or failure), scores, best or not."""
    excerpts: list[Excerpt] = field(default_factory=list)
    simulated: bool = False
    """Whether the score run simulated (an excerpt-scorer-only run has real activations only)."""
    stats: dict[str, Any] | None = None
    lineage: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, int, int, str]:
        return (self.row["model"], self.row["layer"], self.row["neuron"], self.row["sign"])


def table_rows(root: str, version: int | None) -> tuple[int, pa.Table]:
    """(version, rows) of the published table; the latest version when `version` is None."""
    location = DeltaLocation(Storage.open(root), published.TABLE_PATH)
    chosen = location.open(version).version()
    rows = location.read(chosen, published.SCHEMA)
    return chosen, rows.sort_by([(name, "ascending") for name in published.KEY])


def find_row(rows: pa.Table, neuron: str, model: str | None, sign: str, version: int) -> dict[str, Any]:
    """The row of `LAYER:NEURON` (of `model` when the table holds more than one)."""
    match = NEURON.match(neuron)
    if not match:
        raise InputError(f"{neuron}: expected LAYER:NEURON, e.g. 5:123")
    layer, index = int(match[1]), int(match[2])
    found = [
        row
        for row in rows.to_pylist()
        if row["layer"] == layer and row["neuron"] == index and row["sign"] == sign and model in {None, row["model"]}
    ]
    if not found:
        raise InputError(f"{neuron} ({sign}{', ' + model if model else ''}): not in version {version} of the table")
    models = sorted({row["model"] for row in found})
    if len(models) > 1:
        raise InputError(f"{neuron}: published for several models ({', '.join(models)}); name one with --model")
    return found[0]


def pages(storage: Storage, rows: list[dict[str, Any]]) -> Iterator[NeuronPage]:
    """A page per row, in the rows' order within each (score run, layer) group."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["scores_run"], row["layer"]), []).append(row)
    chains: dict[str, list[dict[str, Any]]] = {}
    corpora = Corpora(storage)
    for (scores_run, layer), group in groups.items():
        if scores_run not in chains:
            chains[scores_run] = _lineage(storage, scores_run)
        yield from _layer_pages(storage, corpora, scores_run, layer, group, chains[scores_run])


def _lineage(storage: Storage, scores_run: str) -> list[dict[str, Any]]:
    try:
        return [link.summary() for link in lineage_chain(storage, scores_run)]
    except (InputError, OSError, KeyError) as error:  # a pruned upstream run: the page says so
        return [{"dataset": "scores", "run_id": scores_run, "validation": f"lineage unavailable: {error}"}]


def _partition(storage: Storage, dataset: str, layer: int, schema: pa.Schema | None = None) -> pa.Table | None:
    path = activations_contract.layer_partition(dataset, layer)
    if not storage.is_committed(path):
        return None
    return storage.read_parquet(path, schema=schema)


def _layer_pages(
    storage: Storage,
    corpora: Corpora,
    scores_run: str,
    layer: int,
    rows: list[dict[str, Any]],
    lineage: list[dict[str, Any]],
) -> Iterator[NeuronPage]:
    neurons = pa.array([row["neuron"] for row in rows], pa.int32())
    scores = _partition(storage, contract.scores_path(scores_run), layer, contract.SCORES_SCHEMA)
    simulations = _partition(storage, contract.simulations_path(scores_run), layer, contract.SIMULATIONS_SCHEMA)
    by_neuron_scores = _group(scores, neurons)
    by_neuron_simulations = _group(simulations, neurons)
    records = _records(storage, rows[0], layer, neurons) if simulations is None else {}
    stats = _stats(storage, rows[0], layer, neurons)
    if simulations is not None:
        wanted = {s["sequence_id"] for group in by_neuron_simulations.values() for s in group}
    else:
        wanted = {r["sequence_id"] for group in records.values() for r in group}
    tokens = corpora.tokens(rows[0]["corpus_id"], wanted)
    for row in rows:
        neuron = row["neuron"]
        page = NeuronPage(row, stats=stats.get(neuron), lineage=lineage, simulated=simulations is not None)
        page.explanations = [
            {key: _clean(value) for key, value in sample.items() if key not in {"layer", "neuron"}}
            for sample in by_neuron_scores.get(neuron, [])
        ]
        if simulations is not None:
            chosen = [s for s in by_neuron_simulations.get(neuron, []) if s["explanation_id"] == row["explanation_id"]]
            page.excerpts = _ordered(
                Excerpt(
                    s["kind"],
                    s["split"],
                    s["sequence_id"],
                    tokens.get(s["sequence_id"], ()),
                    tuple(s["true_activations"]),
                    None if s["simulated_activations"] is None else tuple(s["simulated_activations"]),
                    s["failure_reason"],
                )
                for s in chosen
            )
        else:
            page.excerpts = _ordered(
                Excerpt(
                    r["kind"], r["split"], r["sequence_id"], tokens.get(r["sequence_id"], ()), r["activations"], None
                )
                for r in records.get(neuron, [])
            )
        yield page


def _group(table: pa.Table | None, neurons: pa.Array) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    if table is None:
        return grouped
    for item in table.filter(pc.is_in(table["neuron"], neurons)).to_pylist():
        grouped.setdefault(item["neuron"], []).append(item)
    return grouped


def _records(storage: Storage, row: dict[str, Any], layer: int, neurons: pa.Array) -> dict[int, Any]:
    """Held-out top and random records (valid and test splits), when the run did not simulate:
    the page then shows real activations only. Bottom records stand in for top ones, negated, on
    the negative side."""
    table = _activation_partition(storage, row["activations_run"], layer, "records")
    if table is None:
        return {}
    skipped = "bottom" if row["sign"] == "positive" else "top"
    held_out = pc.is_in(table["split"], pa.array(["valid", "test"]))
    table = table.filter(
        pc.and_(pc.and_(pc.is_in(table["neuron"], neurons), pc.not_equal(table["kind"], skipped)), held_out)
    )
    grouped: dict[int, list[dict[str, Any]]] = {}
    for item in table.to_pylist():
        values = item["activations"]
        item["activations"] = tuple(-v for v in values) if row["sign"] == "negative" else tuple(values)
        item["kind"] = "top" if item["kind"] == "bottom" else item["kind"]
        grouped.setdefault(item["neuron"], []).append(item)
    return grouped


def _activation_partition(storage: Storage, run: str, layer: int, dataset: str) -> pa.Table | None:
    """One layer of an activation run's records or neuron statistics; None when gone."""
    for name, slug in activation_runs(storage):
        if name == run:
            if dataset == "records":
                path, schema = activations_contract.records_path(slug, run), activations_contract.RECORDS_SCHEMA
            else:
                path, schema = activations_contract.stats_path(slug, run), activations_contract.STATS_SCHEMA
            return _partition(storage, path, layer, schema)
    return None


def _stats(storage: Storage, row: dict[str, Any], layer: int, neurons: pa.Array) -> dict[int, dict[str, Any]]:
    table = _activation_partition(storage, row["activations_run"], layer, "stats")
    if table is None:
        return {}
    return {
        item["neuron"]: {name: _clean(item[name]) for name in STAT_FIELDS}
        for item in table.filter(pc.is_in(table["neuron"], neurons)).to_pylist()
    }


def _ordered(excerpts: Iterable[Excerpt]) -> list[Excerpt]:
    """Top excerpts first, strongest first; then random ones in corpus order."""
    return sorted(
        excerpts,
        key=lambda e: (e.kind != "top", -max(e.real, default=0.0) if e.kind == "top" else e.sequence_id),
    )


def _clean(value: Any) -> Any:
    """NaN (a score that could not be computed) as None, like the tables' nulls."""
    return None if isinstance(value, float) and math.isnan(value) else value
