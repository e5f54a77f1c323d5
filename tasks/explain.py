"""Tasks shared by the explain and score flows: find an activation run, read neurons' records with
their tokens, and stage / validate / commit a layer of an LLM-stage dataset."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction

from neuronatlas.adapters.storage import Storage
from neuronatlas.adapters.validation import ValidationReport, run_suite
from neuronatlas.core.explain import NeuronRecords, Record
from neuronatlas.datasets import activations as activations_contract
from neuronatlas.datasets import corpus as corpus_contract
from neuronatlas.errors import InputError, ValidationFailedError


@dataclass(frozen=True)
class ActivationRun:
    """A committed extraction run, as its manifest describes it."""

    run_id: str
    records: str
    """Storage path of the records dataset."""
    manifest: dict[str, Any]

    @property
    def layers(self) -> list[int]:
        return list(self.manifest["layers"])

    @property
    def d_mlp(self) -> int:
        return int(self.manifest["d_mlp"])


def find_activation_run(storage: Storage, run: str | None) -> ActivationRun:
    """The named committed activation run, or the only one under the root."""
    found = []
    for slug in storage.list("activations"):
        for name in storage.list(f"activations/{slug}"):
            path = activations_contract.records_path(slug, name)
            if storage.is_committed(path):
                found.append((name, path))
    if run is None and len(found) == 1:
        name, path = found[0]
    else:
        matches = [(name, path) for name, path in found if name == run]
        if not matches:
            names = ", ".join(name for name, _ in found) or "none"
            what = f"--activations {run}: no committed activation run of that id" if run else "--activations: name one"
            raise InputError(f"{what} under {storage.uri()} (found: {names}); run `neuronatlas extract` first")
        name, path = matches[0]
    manifest = storage.manifest(path)
    if "d_mlp" not in manifest:  # runs committed before d_mlp was recorded: read it off the stats
        stats_path = activations_contract.stats_path(manifest["model_slug"], name)
        layer = manifest["layers"][0]
        manifest["d_mlp"] = storage.read_parquet(activations_contract.layer_partition(stats_path, layer)).num_rows
    return ActivationRun(name, path, manifest)


SIGNS = ("positive", "negative")


@task(cache_policy=NO_CACHE)
def load_neuron_records(
    storage: Storage, run: ActivationRun, layer: int, neurons: list[int], sign: str = "positive"
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
    tokens = _tokens_of(storage, run.manifest["corpus_id"], table["sequence_id"])
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


def _tokens_of(storage: Storage, corpus_id: str, sequence_ids: pa.ChunkedArray) -> dict[int, tuple[str, ...]]:
    corpus = storage.read_parquet(corpus_contract.corpus_path(corpus_id), schema=corpus_contract.SCHEMA)
    return corpus_contract.tokens_by_sequence(corpus, sequence_ids)


@task(cache_policy=NO_CACHE)
def stage_tables(storage: Storage, partitions: dict[str, str], tables: dict[str, pa.Table]) -> dict[str, str]:
    """Write each table to its partition's staging folder."""
    staged = {}
    for name, table in tables.items():
        staged[name] = storage.new_staging(partitions[name])
        storage.write_parquet(f"{staged[name]}/part-00000.parquet", table)
    return staged


@stage_tables.on_rollback
def _discard_staged(transaction: Transaction) -> None:
    storage: Storage = transaction.get("storage")
    for partition in transaction.get("partitions"):
        storage.discard_staging(partition)


@task(cache_policy=NO_CACHE)
def validate_staged(
    storage: Storage, staged: dict[str, str], schemas: dict[str, pa.Schema], suites: dict[str, Any], what: str
) -> dict[str, ValidationReport]:
    """Each staged table (read back as written) against its suite: `suites[name]` is a
    (dataset name, frame builder, suite); raise naming every failed expectation."""
    reports = {}
    for name, path in staged.items():
        dataset, to_frame, suite = suites[name]
        reports[name] = run_suite(dataset, to_frame(storage.read_parquet(path, schema=schemas[name])), suite)
    failed = [line for report in reports.values() for line in report.failed()]
    if failed:
        raise ValidationFailedError(what, failed)
    return reports


@task(cache_policy=NO_CACHE)
def commit_tables(storage: Storage, staged: dict[str, str], partitions: dict[str, str], manifest: dict) -> None:
    """Commit in the given order; the last is the one whose commit marks the layer done. A layer
    committed before (whose failed rows were retried) is replaced."""
    for name, staging in staged.items():
        storage.replace(staging, partitions[name], {**manifest, "dataset": name})
    get_run_logger().info("committed %s", ", ".join(storage.uri(partitions[name]) for name in staged))


def needs_work(storage: Storage, partition: str) -> bool:
    """A layer partition to (re)do: not committed, or committed with failures worth retrying
    (failed or refused LLM calls; answers that did not parse are final)."""
    return not storage.is_committed(partition) or storage.manifest(partition).get("retryable_failures", 0) > 0


def float_list(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]
