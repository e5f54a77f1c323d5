"""Tasks of the `extract_activations` flow: the corpus windows in, one pass of the model over them
for a shard of layers, and each layer's two partitions committed (in the flow's process or on a
Dask worker that loads its own model)."""

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from neuronatlas.adapters.extraction import LayerAccumulator, extract, mlp_layout, pick_device, pick_dtype
from neuronatlas.adapters.models import load_model
from neuronatlas.adapters.progress import progress
from neuronatlas.adapters.runners import worker_name
from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.records import Excerpts, read_excerpts
from neuronatlas.core.records import random_pool
from neuronatlas.datasets import activations as contract
from neuronatlas.expectations import activations as suites
from neuronatlas.plans import ExtractPlan
from neuronatlas.tasks.commit import DatasetWrite, commit_datasets


@task(cache_policy=NO_CACHE)
def load_excerpts(storage: Storage, corpus_id: str, limit: int | None) -> Excerpts:
    """The corpus ordered by sequence_id (a stable, content-derived shuffle); the first `limit`."""
    return read_excerpts(storage, corpus_id, limit)


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


@dataclass(frozen=True)
class ShardWork:
    """What a shard of layers needs, in the flow's process or on a Dask worker."""

    plan: ExtractPlan
    datasets: dict[str, str]
    context: dict[str, Any]
    device: str

    def run_shards(self, shards: list[list[int]]) -> list[dict[str, Any]]:
        """Load the excerpts and the model once, then extract and commit each shard."""
        config = self.plan.config
        device = pick_device(self.device)
        excerpts = load_excerpts(self.plan.storage, self.plan.corpus_id, config.limit)
        subject = load_model(self.plan.source).to(device=device, dtype=pick_dtype(config.dtype, device)).eval()
        pool = random_pool(
            len(excerpts.token_ids), config.random_k + 2 * config.top_k, np.random.default_rng(config.seed)
        )
        context = {**self.context, "device": device, "neuron": mlp_layout(subject).definition, "worker": worker_name()}
        outcomes = []
        for shard in shards:
            started = time.perf_counter()
            state = extract_shard(subject, excerpts, shard, config.top_k, pool, config.batch_size, device)
            seconds = time.perf_counter() - started
            for layer in shard:
                self.commit_layer(layer, state.pop(layer), pool, excerpts, context)
            outcomes.append({"timings": {f"layers {shard[0]}-{shard[-1]}": seconds}, "device": device})
        return outcomes

    def commit_layer(self, layer: int, accumulator: Any, pool: np.ndarray, excerpts: Excerpts, context: dict) -> None:
        """Stats first, records last: a layer counts as done when its records partition is committed."""
        k, random_k = self.plan.config.top_k, self.plan.config.random_k
        records, stats = contract.layer_tables(accumulator, pool, excerpts.sequence_ids, k, random_k)
        partitions = {name: contract.layer_partition(path, layer) for name, path in self.datasets.items()}
        storage = self.plan.storage
        storage.delete_dir(partitions["stats"])  # a crash between the two commits left it alone
        n_excerpts, window = excerpts.token_ids.shape
        checks = suites.layer_checks(window, len(stats), n_excerpts * window, k, random_k)
        tables = {"stats": stats, "records": records}  # stats first: records committed mark the layer done
        writes = [
            DatasetWrite(name, partitions[name], [("part-00000.parquet", table)], table.schema, checks[name])
            for name, table in tables.items()
        ]

        def manifest(reports: dict[str, Any], _: dict[str, float]) -> dict[str, Any]:
            return {
                **context,
                "layer": layer,
                "rows": {"records": records.num_rows, "stats": stats.num_rows},
                "short_record_neurons": int(np.sum(stats["short_records"].to_numpy())),
                "validation": {name: reports[name].to_manifest() for name in ("records", "stats")},
            }

        commit_datasets(storage, writes, f"layer {layer} activations", manifest)


@task(cache_policy=NO_CACHE)
def extract_shard_task(work: ShardWork, shard: list[int]) -> dict[str, Any]:
    """One shard of layers on a Dask worker: its own model load, extraction and commits."""
    [outcome] = work.run_shards([shard])
    return outcome
