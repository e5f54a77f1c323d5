"""`extract_activations`: a committed corpus + a subject model -> activation records and neuron
statistics for every MLP neuron of the chosen layers, committed layer by layer."""

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.transactions import transaction

from neuronatlas.adapters.extraction import mlp_layout, pick_device, pick_dtype
from neuronatlas.adapters.models import DEFAULT_MODEL, ModelSource, load_model, open_tokenizer, resolve_model
from neuronatlas.adapters.plots import plot_layer_statistics
from neuronatlas.adapters.runners import LOCAL_WORKERS, parse_runner, worker_name
from neuronatlas.adapters.storage import Storage
from neuronatlas.core.layers import parse_layers
from neuronatlas.core.records import random_pool
from neuronatlas.datasets import activations as contract
from neuronatlas.datasets import corpus as corpus_contract
from neuronatlas.errors import InputError
from neuronatlas.tasks.extract import (
    Excerpts,
    commit_layer,
    extract_shard,
    layer_tables,
    load_excerpts,
    stage_layer,
    validate_layer,
)
from neuronatlas.version import code_version


@dataclass(frozen=True)
class ExtractPlan:
    """Everything checked before any heavy work."""

    storage: Storage
    source: ModelSource
    corpus_id: str
    corpus_manifest: dict[str, Any]
    layers: list[int]
    n_layers: int


@dataclass(frozen=True)
class ExtractResult:
    run_id: str
    records_uri: str
    stats_uri: str
    layers: list[int]
    layers_extracted: list[int]
    """Layers computed by this call (the others were already committed)."""
    plot_uri: str


def check_extract_inputs(
    root: str,
    model: str,
    corpus: str | None,
    layers: str,
    top_k: int,
    random_k: int,
    limit: int | None,
    device: str = "auto",
    dtype: str = "auto",
) -> ExtractPlan:
    """Model, corpus, tokenizer, layers, K, device and dtype, checked in seconds, before the model
    is loaded (and, from the CLI, before Prefect starts)."""
    pick_dtype(dtype, pick_device(device))
    if top_k < 1 or random_k < 0:
        raise InputError(f"--top-k {top_k} / --random-k {random_k}: need top-k >= 1 and random-k >= 0")
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit}: must be at least 1")
    storage = Storage.open(root)
    source = resolve_model(model)
    corpus_id = _committed_corpus(storage, corpus)
    manifest = storage.manifest(corpus_contract.corpus_path(corpus_id))
    tokenizer = open_tokenizer(model)
    if manifest["tokenizer"].get("fingerprint") != tokenizer.fingerprint:
        raise InputError(
            f"--corpus {corpus_id}: tokenised with {manifest['tokenizer']['model']}, whose tokenizer differs from "
            f"{model}'s; ingest the source again with --tokenizer-of {model}"
        )
    n_excerpts = manifest["rows"] if limit is None else min(limit, manifest["rows"])
    if top_k > n_excerpts:
        raise InputError(f"--top-k {top_k}: larger than the corpus ({n_excerpts} excerpts)")
    n_layers = _layer_count(source)
    try:
        chosen = parse_layers(layers, n_layers)
    except ValueError as error:
        raise InputError(f"--layers {layers}: {error}") from None
    return ExtractPlan(storage, source, corpus_id, manifest, chosen, n_layers)


def _committed_corpus(storage: Storage, corpus: str | None) -> str:
    committed = [name for name in storage.list("corpus") if storage.is_committed(f"corpus/{name}")]
    if corpus is None:
        if len(committed) != 1:
            found = ", ".join(committed) or "none"
            raise InputError(f"--corpus: name one of the committed corpora under {storage.uri()} (found: {found})")
        return committed[0]
    if corpus not in committed:
        raise InputError(
            f"--corpus {corpus}: no committed corpus of that id under {storage.uri()}; see `neuronatlas corpora`"
        )
    return corpus


def _layer_count(source: ModelSource) -> int:
    from transformers import AutoConfig

    if source.gguf_file is None:
        config = AutoConfig.from_pretrained(source.folder)
        return int(getattr(config, "num_hidden_layers", None) or config.n_layer)
    import gguf

    reader = gguf.GGUFReader(source.folder / source.gguf_file)
    architecture = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    return int(reader.fields[f"{architecture}.block_count"].parts[-1][0])


@flow(name="extract_activations", log_prints=False)
def extract_activations(
    root: str = "./atlas",
    model: str = DEFAULT_MODEL,
    corpus: str | None = None,
    layers: str = "all",
    top_k: int = 20,
    random_k: int = 15,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 32,
    layers_per_shard: int = 0,
    limit: int | None = None,
    runner: str = "local",
) -> ExtractResult:
    """Extract top / bottom / random records and statistics of every MLP neuron of `layers`;
    with a Dask `runner`, each shard of layers is a task on a worker (see `adapters.runners`)."""
    logger = get_run_logger()
    plan = check_extract_inputs(root, model, corpus, layers, top_k, random_k, limit, device, dtype)
    distributed = parse_runner(runner).distributed
    requested_device = device  # what Dask workers pick from, each on its own hardware
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    dtype_name = str(torch_dtype).removeprefix("torch.")
    parameters = {"top_k": top_k, "random_k": random_k, "seed": seed, "dtype": dtype_name, "limit": limit}
    run = contract.run_id(f"{plan.source.slug}@sha256:{plan.source.checksum}", plan.corpus_id, parameters)
    datasets = {
        "records": contract.records_path(plan.source.slug, run),
        "stats": contract.stats_path(plan.source.slug, run),
    }
    storage = plan.storage
    pending = [
        layer for layer in plan.layers if not storage.is_committed(contract.layer_partition(datasets["records"], layer))
    ]
    logger.info("run %s: %d layers requested, %d to extract", run, len(plan.layers), len(pending))
    timings: dict[str, float] = {}
    if pending:
        started = time.perf_counter()
        context = {
            "run_id": run,
            "model": model,
            "model_checksum": plan.source.checksum,
            "corpus_id": plan.corpus_id,
            "parameters": parameters,
            "code_version": code_version(),
            "prefect_flow_run_id": str(flow_run.get_id() or ""),
        }
        work = ShardWork(plan, datasets, context, batch_size, requested_device if distributed else device, dtype)
        size = layers_per_shard or (-(-len(pending) // LOCAL_WORKERS) if distributed else len(pending))
        shards = [pending[i : i + size] for i in range(0, len(pending), size)]
        if distributed:  # one task per shard, each on a worker that loads its own model
            futures = [extract_shard_task.submit(work, shard) for shard in shards]
            outcomes = [future.result() for future in futures]
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


@dataclass(frozen=True)
class ShardWork:
    """What a shard of layers needs, in the flow's process or on a Dask worker."""

    plan: ExtractPlan
    datasets: dict[str, str]
    context: dict[str, Any]
    batch_size: int
    device: str
    dtype: str

    def run_shards(self, shards: list[list[int]]) -> list[dict[str, Any]]:
        """Load the excerpts and the model once, then extract and commit each shard."""
        parameters = self.context["parameters"]
        top_k, random_k, seed = parameters["top_k"], parameters["random_k"], parameters["seed"]
        device = pick_device(self.device)
        excerpts = load_excerpts(self.plan.storage, self.plan.corpus_id, parameters["limit"])
        subject = load_model(self.plan.source).to(device=device, dtype=pick_dtype(self.dtype, device)).eval()
        pool = random_pool(len(excerpts.token_ids), random_k + 2 * top_k, np.random.default_rng(seed))
        context = {**self.context, "device": device, "neuron": mlp_layout(subject).definition, "worker": worker_name()}
        outcomes = []
        for shard in shards:
            started = time.perf_counter()
            state = extract_shard(subject, excerpts, shard, top_k, pool, self.batch_size, device)
            seconds = time.perf_counter() - started
            for layer in shard:
                _commit_layer(
                    self.plan.storage, self.datasets, layer, state.pop(layer), pool, excerpts, self.plan, context
                )
            outcomes.append({"timings": {f"layers {shard[0]}-{shard[-1]}": seconds}, "device": device})
        return outcomes


@task(cache_policy=NO_CACHE)
def extract_shard_task(work: ShardWork, shard: list[int]) -> dict[str, Any]:
    """One shard of layers on a Dask worker: its own model load, extraction and commits."""
    [outcome] = work.run_shards([shard])
    return outcome


def _commit_layer(
    storage: Storage,
    datasets: dict[str, str],
    layer: int,
    accumulator: Any,
    pool: np.ndarray,
    excerpts: Excerpts,
    plan: ExtractPlan,
    context: dict[str, Any],
) -> None:
    """Stage, validate and commit one layer's two partitions, as one transaction."""
    k, random_k = context["parameters"]["top_k"], context["parameters"]["random_k"]
    records, stats = layer_tables(accumulator, pool, excerpts, k, random_k)
    partitions = {name: contract.layer_partition(path, layer) for name, path in datasets.items()}
    storage.delete_dir(partitions["stats"])  # a crash between the two commits left it alone
    n_excerpts, window = excerpts.token_ids.shape
    with transaction() as txn:
        txn.set("storage", storage)
        txn.set("partitions", list(partitions.values()))
        staged = {
            name: stage_layer(storage, partitions[name], table)
            for name, table in (("records", records), ("stats", stats))
        }
        reports = validate_layer(storage, staged, layer, window, len(stats), k, random_k, n_excerpts * window)
        manifest = {
            **context,
            "layer": layer,
            "rows": {"records": records.num_rows, "stats": stats.num_rows},
            "short_record_neurons": int(np.sum(stats["short_records"].to_numpy())),
            "validation": {name: report.to_manifest() for name, report in reports.items()},
        }
        commit_layer(storage, staged, partitions, manifest)


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
    committed = sorted(
        int(name.removeprefix("layer="))
        for name in storage.list(datasets["records"])
        if name.startswith("layer=") and storage.is_committed(f"{datasets['records']}/{name}")
    )
    stats = storage.read_parquet(datasets["stats"])
    plot = f"{datasets['records']}/summary.png"
    storage.write_bytes(plot, plot_layer_statistics(stats.to_pandas(), title=f"{plan.source.slug} · {run}"))
    first_layer = storage.manifest(contract.layer_partition(datasets["records"], committed[0]))
    manifest = {
        "run_id": run,
        "model": plan.source.spec,
        "model_slug": plan.source.slug,
        "hf_id": plan.source.hf_id,
        "model_checksum": plan.source.checksum,
        "corpus_id": plan.corpus_id,
        "corpus_fingerprint": plan.corpus_manifest["source"]["fingerprint"],
        "layers": committed,
        "n_layers_in_model": plan.n_layers,
        "d_mlp": stats.num_rows // len(committed),
        "parameters": parameters,
        "device_last_run": device,
        "timings_s_last_run": {name: round(seconds, 2) for name, seconds in timings.items()},
        "code_version": code_version(),
        "summary_plot": storage.uri(plot),
        "neuron": first_layer["neuron"],
        "datasets": {name: storage.uri(path) for name, path in datasets.items()},
    }
    for name, path in datasets.items():
        storage.write_json(f"{path}/_manifest.json", {**manifest, "dataset": name})
    return storage.uri(plot)
