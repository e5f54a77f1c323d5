"""`simulate_and_score`: explanations -> scores by every chosen scorer, committed per layer.

Each explanation is scored on its neuron's held-out records and, as the permutation control, on
another neuron's records (docs/method.md §3-5); the scorers themselves are `core/scorers/`.
"""

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from neuronatlas.adapters.embedding import Encoder
from neuronatlas.adapters.llm import make_backend
from neuronatlas.adapters.llm_cache import CachedBackend, warn_if_budget_ran_out
from neuronatlas.adapters.plots import plot_real_vs_null, plot_scores_by_layer
from neuronatlas.adapters.progress import progress
from neuronatlas.adapters.runners import gather_layers, parse_runner
from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.records import Corpora
from neuronatlas.catalog.runs import find_activation_run, needs_work
from neuronatlas.config import LLMOptions, ScoreConfig, parameters, with_signature
from neuronatlas.core.prompts import PROMPT_VERSION
from neuronatlas.core.scorers.simulation import simulated_splits
from neuronatlas.core.scoring import control_partners
from neuronatlas.core.summary import explanation_sensitivity_of, summary, verdict
from neuronatlas.datasets import explanations as contract
from neuronatlas.errors import InputError
from neuronatlas.plans import ScorePlan, fit_to_simulator, plan_score
from neuronatlas.tasks.llm import prefetch_batch, shared_budget_name
from neuronatlas.tasks.score import ScoreWork, score_layer_task, scorers_for
from neuronatlas.version import code_version

SCORER_VERSION = "4"
"""Bumped whenever a scorer's spans, prompts, arithmetic or columns change (4: every null score's
reason in `score_reasons`): part of every score run's id,
so a rerun after such a change scores afresh (LLM answers still come from the cache)."""


@dataclass(frozen=True)
class ScoreResult:
    run_id: str
    scores_uri: str
    summary: dict[str, Any]
    plot_uri: str | None
    layer_plot_uri: str | None
    """Scores by layer (best explanation per neuron against the null)."""
    llm_usage: dict[str, Any]
    """This call's LLM usage: calls, tokens, cost, cache hits."""


@flow(name="simulate_and_score", log_prints=False)
@with_signature(parameters(ScoreConfig))
def simulate_and_score(
    root: str = "./atlas",
    options: LLMOptions | None = None,
    runner: str = "local",
    backend: Any = None,
    plan: Any = None,
    **settings: Any,
) -> ScoreResult:
    """Score every explanation of a run with each chosen scorer and the token-lookup baseline
    (`settings`: the fields of `ScoreConfig`; `plan`: the same, checked by the caller); `backend`
    replaces the simulator in tests. With a Dask `runner`, each layer's neurons are a task on a
    worker with models of its own."""
    logger = get_run_logger()
    options = options or LLMOptions()
    plan = plan or plan_score(root, ScoreConfig.of(settings), None if backend else options)
    storage, config = plan.storage, plan.config
    distributed = parse_runner(runner).distributed
    if distributed and backend is not None:
        raise InputError("--runner dask: a backend object cannot be sent to workers; name the simulator")
    llm = CachedBackend(backend or make_backend(config.simulator, "--simulator", options, storage), storage)
    if distributed and options.batch:
        raise InputError("--batch-api: the batch is sent from the flow's process; use --runner local")
    plan = fit_to_simulator(plan, llm)
    logger.info("%s", plan.choice)
    work = _score_work(plan, llm, options)
    pending = [layer for layer in work.layers if _needs_scoring(storage, work, layer)]
    logger.info(
        "run %s: %d neurons in %d layers, %d layers to score (%s)",
        work.run_id,
        len(work.neurons),
        len(work.layers),
        len(pending),
        plan.method,
    )
    started = time.perf_counter()
    todo = [pair for pair in work.neurons if pair[0] in pending]
    if options.batch and pending:
        asking = scorers_for(plan, llm, options, encoder=False)
        prefetch_batch(llm, lambda: [work.outcomes(layer, asking, lambda _: None) for layer in pending], logger)
    with progress("simulating", len(todo), logger, "neurons", "neurons") as update:
        if distributed:  # one task per layer, on a worker with models of its own
            budget = shared_budget_name()
            futures = [(layer, score_layer_task.submit(work, layer, options, budget)) for layer in pending]
            gather_layers(futures, llm, work.of_layer, update)
        else:
            scorers = scorers_for(plan, llm, options)
            done = 0
            for layer in pending:
                work.run(layer, scorers, lambda n, before=done: update(before + n, before + n), llm.parallel_requests)
                done += len(work.of_layer(layer))
    return _finish(work, llm, time.perf_counter() - started, bool(pending))


def _score_work(plan: ScorePlan, llm: CachedBackend, options: LLMOptions) -> ScoreWork:
    """The run's id, inputs and lineage, read once."""
    storage, config, manifest = plan.storage, plan.config, plan.explanations_manifest
    simulating = "simulation" in plan.scorers
    activation_run = find_activation_run(storage, manifest["activations_run"])
    neurons = [(int(layer), int(neuron)) for layer, neuron in manifest["neurons"]]
    sign = manifest["parameters"].get("sign", "positive")
    parameters = {
        "method": plan.method,
        "scale": config.scale,
        "placeholder": config.placeholder,
        "seed": config.seed,
        "prompt_version": PROMPT_VERSION,
        "scorer_version": SCORER_VERSION,
        "scorers": list(plan.scorers),
        "splits": ",".join(simulated_splits(config.splits)),
        "encoder": Encoder.id if "embedding" in plan.scorers else None,
    }
    run = contract.run_id("s", plan.explanations_run, llm.id if simulating else None, parameters)
    explanations = storage.read_parquet(
        contract.explanations_path(plan.explanations_run), schema=contract.EXPLANATIONS_SCHEMA
    )
    layers = sorted({layer for layer, _ in neurons})
    context = {
        "run_id": run,
        "explanations_run": plan.explanations_run,
        "activations_run": activation_run.run_id,
        "simulator": llm.id if simulating else None,
        "scorer_choice": plan.choice,
        "sign": sign,
        "parameters": parameters,
        "code_version": code_version(),
        "prefect_flow_run_id": str(flow_run.get_id() or ""),
    }
    return ScoreWork(
        plan,
        run,
        activation_run,
        neurons,
        control_partners(neurons, np.random.default_rng(config.seed)),
        sign,
        explanations,
        {layer: contract.explanations_digest(explanations, layer) for layer in layers},
        {
            "simulations": contract.simulations_path(run),
            "control": contract.control_path(run),
            "scores": contract.scores_path(run),
        },
        context,
        Corpora(storage),
    )


def _needs_scoring(storage: Storage, work: ScoreWork, layer: int) -> bool:
    partition = f"{work.paths['scores']}/layer={layer}"
    if needs_work(storage, partition):
        return True
    return bool(storage.manifest(partition).get("explanations_digest") != work.digests[layer])


def _finish(work: ScoreWork, llm: CachedBackend, seconds: float, changed: bool) -> ScoreResult:
    """The run's summary, pictures and manifests, and each scorer's verdict in the log."""
    storage, paths, plan = work.plan.storage, work.paths, work.plan
    scores = storage.read_parquet(paths["scores"], schema=contract.SCORES_SCHEMA).to_pandas()
    sensitivity = None
    if storage.list(paths["simulations"]) and storage.list(paths["control"]):
        sensitivity = explanation_sensitivity_of(
            storage.read_parquet(paths["simulations"], schema=contract.SIMULATIONS_SCHEMA).to_pandas(),
            storage.read_parquet(paths["control"], schema=contract.CONTROL_SCHEMA).to_pandas(),
        )
    figures = summary(scores, sensitivity, plan.config.seed)
    plot, layer_plot = f"{paths['scores']}/real_vs_null.png", f"{paths['scores']}/scores_by_layer.png"
    if changed or not storage.exists(f"{paths['scores']}/_manifest.json"):
        what = f"{work.run_id} · {llm.id.split('@')[0]} · {plan.method}"
        storage.write_bytes(plot, plot_real_vs_null(scores, what))
        storage.write_bytes(layer_plot, plot_scores_by_layer(scores[scores["is_best"]], what))
        manifest = {
            **work.context,
            "explanations": storage.uri(contract.explanations_path(plan.explanations_run)),
            "model": plan.explanations_manifest.get("model"),
            "corpus_id": plan.explanations_manifest.get("corpus_id"),
            "explainer": plan.explanations_manifest.get("explainer"),
            "summary": figures,
            "plot": storage.uri(plot),
            "layer_plot": storage.uri(layer_plot),
            "llm_last_run": llm.usage_manifest(),
            "timings_s_last_run": {"simulate_and_score": round(seconds, 2)},
            "datasets": {name: storage.uri(path) for name, path in paths.items()},
        }
        for name, path in paths.items():
            if storage.list(path):
                storage.write_json(f"{path}/_manifest.json", {**manifest, "dataset": name})
    logger = get_run_logger()
    logger.info("scores: %s", {name: value for name, value in figures.items() if name != "scorers"})
    for name, gap in figures["scorers"].items():
        if gap is not None:
            line = "%s: real %.3f vs null %.3f, gap %+.3f (95%% CI %+.3f..%+.3f, n=%d): %s"
            log = logger.info if gap["significant"] else logger.warning
            log(line, name, gap["real"], gap["null"], gap["gap"], *gap["ci95"], gap["n"], verdict(gap))
    warn_if_budget_ran_out(logger, llm)
    return ScoreResult(
        work.run_id,
        storage.uri(paths["scores"]),
        figures,
        storage.uri(plot),
        storage.uri(layer_plot),
        llm.usage_manifest(),
    )
