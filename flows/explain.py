"""`explain_neurons`: activation records -> explanations, `samples` per neuron, committed per layer.

The explainer sees each neuron's train top records (METHOD.md §2) and answers from "the main
thing this neuron does is find". Every answer goes through the LLM cache under the root, so a
rerun (or a resumed crash) asks the model nothing it has answered before.
"""

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.transactions import transaction

from neuronatlas.adapters.llm import BackendOptions, GenerationParams, LLMBackend, check_backend, make_backend
from neuronatlas.adapters.llm_cache import CachedBackend, UsageReport, warn_if_budget_ran_out
from neuronatlas.adapters.progress import progress
from neuronatlas.adapters.runners import gather_layers, parse_runner, worker_name
from neuronatlas.adapters.storage import Storage
from neuronatlas.core.explain import explanation_rows, unexplainable
from neuronatlas.core.layers import parse_layers, parse_neurons
from neuronatlas.core.prompts import PROMPT_VERSION, explainer_prompt
from neuronatlas.datasets import activations as activations_contract
from neuronatlas.datasets import explanations as contract
from neuronatlas.errors import InputError
from neuronatlas.expectations import explanations as suites
from neuronatlas.tasks.explain import (
    SIGNS,
    ActivationRun,
    commit_tables,
    find_activation_run,
    load_neuron_records,
    needs_work,
    stage_tables,
    validate_staged,
)
from neuronatlas.version import code_version

DEFAULT_EXPLAINER = "local:qwen2.5-coder-1.5b"
FORMATS = ("pairs", "highlight", "tokens")
DEFAULT_FORMAT = "tokens"
"""The format whose explanations beat the permutation null in the validity harness (README)."""
CHUNK = 8
"""Neurons per backend call: answers are cached as each chunk returns."""


@dataclass(frozen=True)
class Selection:
    """What a stage works on: checked inputs, before any model loads."""

    storage: Storage
    run: ActivationRun
    neurons: list[tuple[int, int]]
    """Sorted (layer, neuron) pairs."""

    @property
    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.neurons})

    def of_layer(self, layer: int) -> list[int]:
        return [neuron for chosen_layer, neuron in self.neurons if chosen_layer == layer]


def select_neurons(root: str, activations: str | None, layers: str, neurons: str, seed: int) -> Selection:
    storage = Storage.open(root)
    run = find_activation_run(storage, activations)
    try:
        chosen_layers = parse_layers(layers, run.manifest["n_layers_in_model"])
    except ValueError as error:
        raise InputError(f"--layers {layers}: {error}") from None
    missing = [layer for layer in chosen_layers if layer not in run.layers]
    if missing and layers != "all":
        raise InputError(f"--layers {layers}: layer {missing[0]} was not extracted in {run.run_id} ({run.layers})")
    chosen_layers = [layer for layer in chosen_layers if layer in run.layers]
    try:
        pairs = parse_neurons(neurons, chosen_layers, run.d_mlp, np.random.default_rng(seed))
    except ValueError as error:
        raise InputError(f"--neurons {neurons}: {error}") from None
    return Selection(storage, run, pairs)


def check_explain_inputs(
    root: str,
    activations: str | None,
    layers: str,
    neurons: str,
    explainer: str,
    samples: int,
    prompt_format: str,
    scale: int,
    seed: int,
    options: BackendOptions | None = None,
    sign: str = "positive",
) -> Selection:
    """Everything checkable before a model loads; the explainer too unless `options` is None
    (a backend object was passed in)."""
    if options is not None:
        check_backend(explainer, "--explainer", options)
    if samples < 1:
        raise InputError(f"--samples {samples}: must be at least 1")
    if sign not in SIGNS:
        raise InputError(f"--sign {sign}: expected positive or negative")
    if prompt_format not in FORMATS:
        raise InputError(f"--prompt-format {prompt_format}: expected one of {', '.join(FORMATS)}")
    if not 1 <= scale <= 10:
        raise InputError(f"--scale {scale}: expected 1 to 10")
    return select_neurons(root, activations, layers, neurons, seed)


@dataclass(frozen=True)
class ExplainResult:
    run_id: str
    uri: str
    explained: int
    failed: int
    llm_calls: int
    llm_usage: dict[str, Any]
    """This call's LLM usage: calls, tokens, cost, cache hits."""


@flow(name="explain_neurons", log_prints=False)
def explain_neurons(
    root: str = "./atlas",
    activations: str | None = None,
    layers: str = "all",
    neurons: str = "24",
    explainer: str = DEFAULT_EXPLAINER,
    samples: int = 3,
    prompt_format: str = "tokens",
    temperature: float = 1.0,
    max_tokens: int = 60,
    scale: int = 9,
    seed: int = 0,
    sign: str = "positive",
    options: BackendOptions | None = None,
    backend: Any = None,
    runner: str = "local",
) -> ExplainResult:
    """Explain the selected neurons; `backend` (an `LLMBackend`) replaces `explainer` in tests.
    With a Dask `runner`, each layer's neurons are a task on a worker with its own explainer."""
    logger = get_run_logger()
    options = options or BackendOptions()
    selection = check_explain_inputs(
        root,
        activations,
        layers,
        neurons,
        explainer,
        samples,
        prompt_format,
        scale,
        seed,
        None if backend else options,
        sign,
    )
    storage = selection.storage
    distributed = parse_runner(runner).distributed
    if distributed and backend is not None:
        raise InputError("--runner dask: a backend object cannot be sent to workers; name the explainer")
    llm = CachedBackend(backend or make_backend(explainer, "--explainer", options, storage), storage)
    params = GenerationParams(n=samples, temperature=temperature, max_tokens=max_tokens, seed=seed)
    parameters = {
        "samples": samples,
        "prompt_format": prompt_format,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "scale": scale,
        "seed": seed,
        "prompt_version": PROMPT_VERSION,
        "sign": sign,
    }
    run = contract.run_id("e", selection.run.run_id, selection.neurons, llm.id, parameters)
    path = contract.explanations_path(run)
    started = time.perf_counter()
    pending = [layer for layer in selection.layers if needs_work(storage, f"{path}/layer={layer}")]
    logger.info(
        "run %s: %d neurons in %d layers, %d layers to explain",
        run,
        len(selection.neurons),
        len(selection.layers),
        len(pending),
    )
    context = {
        "run_id": run,
        "activations_run": selection.run.run_id,
        "explainer": llm.id,
        "parameters": parameters,
        "code_version": code_version(),
        "prefect_flow_run_id": str(flow_run.get_id() or ""),
    }
    with progress(
        "explaining", sum(len(selection.of_layer(layer)) for layer in pending), logger, "neurons", "neurons"
    ) as update:
        work = LayerWork(selection, path, params, prompt_format, scale, sign, samples, context)
        if distributed:  # one task per layer, on a worker with its own explainer
            futures = [(layer, explain_layer_task.submit(work, layer, explainer, options)) for layer in pending]
            gather_layers(futures, llm, selection.of_layer, update)
        else:
            done = 0
            for layer in pending:
                work.run(layer, llm, update, done)
                done += len(selection.of_layer(layer))
    return _finish(storage, path, run, selection, llm, context, time.perf_counter() - started, pending)


@dataclass(frozen=True)
class LayerWork:
    """What explaining one layer needs, in the flow's process or on a Dask worker."""

    selection: Selection
    path: str
    params: GenerationParams
    prompt_format: str
    scale: int
    sign: str
    samples: int
    context: dict[str, Any]

    def run(self, layer: int, llm: LLMBackend, update: Any, done_before: int) -> None:
        """Explain the layer's neurons and commit its partition."""
        table, retryable = _explain_layer(self, layer, llm, update, done_before)
        context = {**self.context, "retryable_failures": retryable, "worker": worker_name()}
        _commit(self.selection.storage, self.path, layer, table, self.selection.run.d_mlp, self.samples, context)


@task(cache_policy=NO_CACHE)
def explain_layer_task(work: LayerWork, layer: int, explainer: str, options: BackendOptions) -> UsageReport:
    """One layer's neurons on a Dask worker, with an explainer of its own; returns what it spent."""
    storage = work.selection.storage
    llm = CachedBackend(make_backend(explainer, "--explainer", options, storage), storage)
    work.run(layer, llm, lambda *_: None, 0)
    return llm.report()


def _explain_layer(
    work: LayerWork,
    layer: int,
    llm: LLMBackend,
    update: Any,
    done_before: int,
) -> tuple[pa.Table, int]:
    """The layer's explanation rows, and how many failed in the LLM call itself (retried by a rerun)."""
    selection, params = work.selection, work.params
    records = load_neuron_records(selection.storage, selection.run, layer, selection.of_layer(layer), work.sign)
    rows: list[dict[str, Any]] = []
    retryable = 0
    for start in range(0, len(records), CHUNK):
        chunk = records[start : start + CHUNK]
        reasons = [unexplainable(neuron) for neuron in chunk]
        asked = [neuron for neuron, reason in zip(chunk, reasons, strict=True) if reason is None]
        prompts = [explainer_prompt(neuron.train(), work.prompt_format, work.scale) for neuron in asked]  # type: ignore[arg-type]
        answers = iter(llm.generate(prompts, params) if prompts else [])
        for neuron, reason in zip(chunk, reasons, strict=True):
            answer = next(answers) if reason is None else None
            texts = answer.texts if answer else ()
            failure = reason or (answer.failure if answer else None)
            retryable += params.n if answer is not None and answer.failure is not None else 0
            for row in explanation_rows(texts, failure, params.n):
                rows.append(
                    {
                        "layer": layer,
                        "neuron": neuron.neuron,
                        "explanation_id": row.explanation_id,
                        "explanation": row.explanation,
                        "failure_reason": row.failure_reason,
                        "answer": row.answer,
                        "prompt_tokens": answer.prompt_tokens if answer else 0,
                        "completion_tokens": answer.completion_tokens if answer else 0,
                    }
                )
        update(done_before + start + len(chunk), done_before + start + len(chunk))
    return pa.Table.from_pylist(rows, schema=contract.EXPLANATIONS_SCHEMA), retryable


def _commit(storage: Storage, path: str, layer: int, table: pa.Table, d_mlp: int, samples: int, context: dict) -> None:
    partitions = {"explanations": activations_contract.layer_partition(path, layer)}
    with transaction() as txn:
        txn.set("storage", storage)
        txn.set("partitions", list(partitions.values()))
        staged = stage_tables(storage, partitions, {"explanations": table})
        reports = validate_staged(
            storage,
            staged,
            {"explanations": contract.EXPLANATIONS_SCHEMA},
            {"explanations": ("explanations", suites.explanations_frame, suites.explanations_suite(d_mlp, samples))},
            f"layer {layer} explanations",
        )
        failures = Counter(reason for reason in table["failure_reason"].to_pylist() if reason)
        manifest = {
            **context,
            "layer": layer,
            "rows": table.num_rows,
            "failures": dict(failures),
            "validation": {name: report.to_manifest() for name, report in reports.items()},
        }
        commit_tables(storage, staged, partitions, manifest)


def _finish(
    storage: Storage,
    path: str,
    run: str,
    selection: Selection,
    llm: CachedBackend,
    context: dict,
    seconds: float,
    pending: list[int],
) -> ExplainResult:
    table = storage.read_parquet(path, schema=contract.EXPLANATIONS_SCHEMA)
    failures = Counter(reason for reason in table["failure_reason"].to_pylist() if reason)
    explained = table.num_rows - sum(failures.values())
    if pending or not storage.exists(f"{path}/_manifest.json"):
        storage.write_json(
            f"{path}/_manifest.json",
            {
                **context,
                "dataset": "explanations",
                "neurons": [list(pair) for pair in selection.neurons],
                "layers": selection.layers,
                "activations": storage.uri(selection.run.records),
                "model": selection.run.manifest.get("model"),
                "model_checksum": selection.run.manifest.get("model_checksum"),
                "corpus_id": selection.run.manifest.get("corpus_id"),
                "rows": table.num_rows,
                "explained": explained,
                "failures": dict(failures),
                "llm_last_run": llm.usage_manifest(),
                "timings_s_last_run": {"explain": round(seconds, 2)},
            },
        )
    logger = get_run_logger()
    logger.info("%d explanations, %d failed; %d LLM calls", explained, sum(failures.values()), llm.usage.calls)
    warn_if_budget_ran_out(logger, llm)
    return ExplainResult(
        run, storage.uri(path), explained, sum(failures.values()), llm.usage.calls, llm.usage_manifest()
    )
