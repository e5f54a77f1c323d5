"""Tasks of the `extract_activations` flow."""

from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction

from neuronatlas.adapters.extraction import LayerAccumulator, extract
from neuronatlas.adapters.progress import progress
from neuronatlas.adapters.storage import Storage
from neuronatlas.adapters.validation import ValidationReport, run_suite
from neuronatlas.core.records import layer_records
from neuronatlas.datasets import activations as contract
from neuronatlas.datasets import corpus as corpus_contract
from neuronatlas.errors import ValidationFailedError
from neuronatlas.expectations import activations as suites


@dataclass(frozen=True)
class Excerpts:
    """The corpus windows an extraction runs over, in a fixed order (by sequence_id)."""

    token_ids: np.ndarray
    """(N, T) token ids."""
    sequence_ids: np.ndarray
    """(N,) sequence id of each row."""


@task(cache_policy=NO_CACHE)
def load_excerpts(storage: Storage, corpus_id: str, limit: int | None) -> Excerpts:
    """The corpus ordered by sequence_id (a stable, content-derived shuffle); the first `limit`."""
    table = storage.read_parquet(corpus_contract.corpus_path(corpus_id), schema=corpus_contract.SCHEMA)
    table = table.select(["sequence_id", "token_ids"]).sort_by("sequence_id")
    if limit is not None:
        table = table.slice(0, limit)
    window = len(table["token_ids"][0]) if table.num_rows else 0
    flat = table["token_ids"].combine_chunks().flatten().to_numpy()
    return Excerpts(flat.reshape(table.num_rows, window).astype(np.int64), table["sequence_id"].to_numpy())


@task(cache_policy=NO_CACHE)
def extract_shard(
    model: Any, excerpts: Excerpts, layers: list[int], k: int, pool: np.ndarray, batch_size: int, device: str
) -> dict[int, LayerAccumulator]:
    """One pass over the excerpts for a group of layers (stopping after the last of them)."""
    logger = get_run_logger()
    n_excerpts = len(excerpts.token_ids)
    label = (
        "layers " + ",".join(map(str, layers))
        if len(layers) <= 4
        else f"{len(layers)} layers ({layers[0]}-{layers[-1]})"
    )
    with progress(label, n_excerpts, logger, unit="excerpts") as update:
        return extract(
            model,
            excerpts.token_ids,
            layers,
            k=k,
            bottom_candidates=2 * k,
            pool=pool,
            batch_size=batch_size,
            device=device,
            on_batch=update,
        )


def layer_tables(
    accumulator: LayerAccumulator, pool: np.ndarray, excerpts: Excerpts, k: int, random_k: int
) -> tuple[Any, Any]:
    """(records, stats) tables of one layer, from its accumulators (moved to the CPU)."""
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
    stats = contract.stats_table(accumulator.stats.result(), records, k, random_k)
    return contract.records_table(records, excerpts.sequence_ids), stats


@task(cache_policy=NO_CACHE)
def stage_layer(storage: Storage, partition: str, table: Any) -> str:
    staging = storage.new_staging(partition)
    storage.write_parquet(f"{staging}/part-00000.parquet", table)
    return staging


@stage_layer.on_rollback
def _discard_staged_layer(transaction: Transaction) -> None:
    storage: Storage = transaction.get("storage")
    for partition in transaction.get("partitions"):
        storage.discard_staging(partition)


@task(cache_policy=NO_CACHE)
def validate_layer(
    storage: Storage,
    staged: dict[str, str],
    layer: int,
    window: int,
    d_mlp: int,
    k: int,
    random_k: int,
    n_tokens: int,
) -> dict[str, ValidationReport]:
    """Both suites on the staged files as written; raise naming every failed expectation."""
    records = storage.read_parquet(staged["records"], schema=contract.RECORDS_SCHEMA)
    stats = storage.read_parquet(staged["stats"], schema=contract.STATS_SCHEMA)
    reports = {
        "records": run_suite(
            "activations", suites.records_frame(records, k, random_k), suites.records_suite(window, d_mlp)
        ),
        "stats": run_suite("neuron_stats", suites.stats_frame(stats), suites.stats_suite(d_mlp, n_tokens)),
    }
    failed = [line for report in reports.values() for line in report.failed()]
    if failed:
        raise ValidationFailedError(f"layer {layer} activations", failed)
    return reports


@task(cache_policy=NO_CACHE)
def commit_layer(storage: Storage, staged: dict[str, str], partitions: dict[str, str], manifest: dict) -> None:
    """Stats first, records last: a layer counts as done when its records partition is committed."""
    for name in ("stats", "records"):
        storage.commit(staged[name], partitions[name], {**manifest, "dataset": name})
    get_run_logger().info("committed layer %s: %s", manifest["layer"], storage.uri(partitions["records"]))
