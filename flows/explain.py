"""`explain_neurons`: activation records -> explanations, `samples` per neuron, committed per layer.

The explainer sees each neuron's train top records (docs/method.md §2) and answers from "the main
thing this neuron does is find". Every answer goes through the LLM cache under the root, so a
rerun (or a resumed crash) asks the model nothing it has answered before.
"""

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from neuronatlas.adapters.llm import make_backend
from neuronatlas.adapters.llm_cache import CachedBackend, warn_if_budget_ran_out
from neuronatlas.adapters.progress import progress
from neuronatlas.adapters.runners import gather_layers, parse_runner
from neuronatlas.catalog.records import Corpora
from neuronatlas.catalog.runs import needs_work
from neuronatlas.config import ExplainConfig, LLMOptions, parameters, with_signature
from neuronatlas.core.llm import GenerationParams
from neuronatlas.core.prompts import PROMPT_VERSION
from neuronatlas.datasets import explanations as contract
from neuronatlas.errors import InputError
from neuronatlas.plans import ExplainPlan, plan_explain
from neuronatlas.tasks.explain import LayerWork, explain_layer_task
from neuronatlas.tasks.llm import prefetch_batch, shared_budget_name
from neuronatlas.version import code_version


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
@with_signature(parameters(ExplainConfig))
def explain_neurons(
    root: str = "./atlas",
    options: LLMOptions | None = None,
    runner: str = "local",
    backend: Any = None,
    plan: Any = None,
    **settings: Any,
) -> ExplainResult:
    """Explain the selected neurons (`settings`: the fields of `ExplainConfig`; `plan`: the same,
    checked by the caller); `backend` (an `LLMBackend`) replaces the explainer in tests. With a
    Dask `runner`, each layer's neurons are a task on a worker with its own explainer."""
    logger = get_run_logger()
    options = options or LLMOptions()
    plan = plan or plan_explain(root, ExplainConfig.of(settings), None if backend else options)
    config, storage = plan.config, plan.storage
    distributed = parse_runner(runner).distributed
    if distributed and backend is not None:
        raise InputError("--runner dask: a backend object cannot be sent to workers; name the explainer")
    llm = CachedBackend(backend or make_backend(config.explainer, "--explainer", options, storage), storage)
    params = GenerationParams(
        n=config.samples, temperature=config.temperature, max_tokens=config.max_tokens, seed=config.seed
    )
    parameters = {
        "samples": config.samples,
        "prompt_format": config.prompt_format,
        "temperature": config.temperature,
        "max_tokens": config.max_tokens,
        "scale": config.scale,
        "seed": config.seed,
        "prompt_version": PROMPT_VERSION,
        "sign": config.sign,
    }
    run = contract.run_id("e", plan.run.run_id, plan.neurons, llm.id, parameters)
    path = contract.explanations_path(run)
    started = time.perf_counter()
    pending = [layer for layer in plan.layers if needs_work(storage, f"{path}/layer={layer}")]
    logger.info(
        "run %s: %d neurons in %d layers, %d layers to explain", run, len(plan.neurons), len(plan.layers), len(pending)
    )
    context = {
        "run_id": run,
        "activations_run": plan.run.run_id,
        "explainer": llm.id,
        "parameters": parameters,
        "code_version": code_version(),
        "prefect_flow_run_id": str(flow_run.get_id() or ""),
    }
    work = LayerWork(plan, path, params, context, Corpora(storage))
    if distributed and options.batch:
        raise InputError("--batch-api: the batch is sent from the flow's process; use --runner local")
    if options.batch and pending:
        prefetch_batch(llm, lambda: [work.explain(layer, llm, lambda _: None) for layer in pending], logger)
    with progress(
        "explaining", sum(len(plan.of_layer(layer)) for layer in pending), logger, "neurons", "neurons"
    ) as update:
        if distributed:  # one task per layer, on a worker with its own explainer
            budget = shared_budget_name()
            futures = [
                (layer, explain_layer_task.submit(work, layer, config.explainer, options, budget)) for layer in pending
            ]
            gather_layers(futures, llm, plan.of_layer, update)
        else:
            done = 0
            for layer in pending:
                work.run(layer, llm, lambda n, before=done: update(before + n, before + n))
                done += len(plan.of_layer(layer))
    return _finish(storage, path, run, plan, llm, context, time.perf_counter() - started, pending)


def _finish(
    storage: Any,
    path: str,
    run: str,
    plan: ExplainPlan,
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
                "neurons": [list(pair) for pair in plan.neurons],
                "layers": plan.layers,
                "activations": storage.uri(plan.run.records),
                "model": plan.run.manifest.get("model"),
                "model_checksum": plan.run.manifest.get("model_checksum"),
                "corpus_id": plan.run.manifest.get("corpus_id"),
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
