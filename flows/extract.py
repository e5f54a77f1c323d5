"""`extract_activations`: a committed corpus + a subject model -> activation records and neuron
statistics for every MLP neuron of the chosen layers, committed layer by layer."""

import time
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from neuronatlas.adapters.extraction import pick_device, pick_dtype
from neuronatlas.adapters.plots import plot_layer_statistics
from neuronatlas.adapters.runners import LOCAL_WORKERS, parse_runner
from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.runs import committed_layers
from neuronatlas.config import ExtractConfig, parameters, with_signature
from neuronatlas.datasets import activations as contract
from neuronatlas.plans import ExtractPlan, plan_extract
from neuronatlas.tasks.extract import ShardWork, extract_shard_task
from neuronatlas.version import code_version


@dataclass(frozen=True)
class ExtractResult:
    run_id: str
    records_uri: str
    stats_uri: str
    layers: list[int]
    layers_extracted: list[int]
    """Layers computed by this call (the others were already committed)."""
    plot_uri: str


@flow(name="extract_activations", log_prints=False)
@with_signature(parameters(ExtractConfig))
def extract_activations(
    root: str = "./atlas", runner: str = "local", plan: Any = None, **settings: Any
) -> ExtractResult:
    """Extract top / bottom / random records and statistics of every MLP neuron of the chosen
    layers (`settings`: the fields of `ExtractConfig`; `plan`: the same, checked by the caller);
    with a Dask `runner`, each shard of layers is a task on a worker (see `adapters.runners`)."""
    logger = get_run_logger()
    plan = plan or plan_extract(root, ExtractConfig.of(settings))
    config, storage = plan.config, plan.storage
    distributed = parse_runner(runner).distributed
    device = pick_device(config.device)
    dtype_name = str(pick_dtype(config.dtype, device)).removeprefix("torch.")
    parameters = {
        "top_k": config.top_k,
        "random_k": config.random_k,
        "seed": config.seed,
        "dtype": dtype_name,
        "limit": config.limit,
    }
    run = contract.run_id(f"{plan.source.slug}@sha256:{plan.source.checksum}", plan.corpus_id, parameters)
    datasets = {
        "records": contract.records_path(plan.source.slug, run),
        "stats": contract.stats_path(plan.source.slug, run),
    }
    done = set(committed_layers(storage, datasets["records"]))
    pending = [layer for layer in plan.layers if layer not in done]
    logger.info("run %s: %d layers requested, %d to extract", run, len(plan.layers), len(pending))
    timings: dict[str, float] = {}
    if pending:
        started = time.perf_counter()
        context = {
            "run_id": run,
            "model": config.model,
            "model_checksum": plan.source.checksum,
            "corpus_id": plan.corpus_id,
            "parameters": parameters,
            "code_version": code_version(),
            "prefect_flow_run_id": str(flow_run.get_id() or ""),
        }
        # Dask workers pick their device from what was asked, each on its own hardware
        work = ShardWork(plan, datasets, context, config.device if distributed else device)
        size = config.layers_per_shard or (-(-len(pending) // LOCAL_WORKERS) if distributed else len(pending))
        shards = [pending[i : i + size] for i in range(0, len(pending), size)]
        if distributed:  # one task per shard, each on a worker that loads its own model
            outcomes = [future.result() for future in [extract_shard_task.submit(work, shard) for shard in shards]]
        else:
            outcomes = work.run_shards(shards)
        for outcome in outcomes:
            timings.update(outcome["timings"])
            device = outcome["device"]
        timings["extraction_total"] = time.perf_counter() - started
    if pending or not storage.is_committed(datasets["records"]):
        plot_uri = _finish_run(storage, datasets, run, plan, parameters, timings, device)
    else:  # nothing new: leave the run's manifests and picture as they are
        plot_uri = storage.manifest(datasets["records"])["summary_plot"]
    return ExtractResult(
        run, storage.uri(datasets["records"]), storage.uri(datasets["stats"]), plan.layers, pending, plot_uri
    )


def _finish_run(
    storage: Storage,
    datasets: dict[str, str],
    run: str,
    plan: ExtractPlan,
    parameters: dict[str, Any],
    timings: dict[str, float],
    device: str,
) -> str:
    """The run's manifests (every committed layer) and its summary picture."""
    committed = committed_layers(storage, datasets["records"])
    stats = storage.read_parquet(datasets["stats"])
    plot = f"{datasets['records']}/summary.png"
    storage.write_bytes(plot, plot_layer_statistics(stats.to_pandas(), title=f"{plan.source.slug} · {run}"))
    first_layer = storage.manifest(contract.layer_partition(datasets["records"], committed[0]))
    manifest = contract.run_manifest(
        run,
        plan.source,
        plan.corpus_id,
        plan.corpus_manifest,
        committed,
        plan.n_layers,
        stats.num_rows // len(committed),
        parameters,
        {
            "device_last_run": device,
            "timings_s_last_run": {name: round(seconds, 2) for name, seconds in timings.items()},
            "code_version": code_version(),
            "summary_plot": storage.uri(plot),
            "neuron": first_layer["neuron"],
            "datasets": {name: storage.uri(path) for name, path in datasets.items()},
        },
    )
    for name, path in datasets.items():
        storage.write_json(f"{path}/_manifest.json", {**manifest, "dataset": name})
    return storage.uri(plot)
