"""`simulate_and_score`: explanations -> simulated activations -> scores, committed per layer.

Each explanation is simulated on its neuron's calibration, valid and test records (top and
random), and, as the permutation control, on another neuron's valid records (METHOD.md §3-4).
The simulator reads digit probabilities from the prompt when it can (line by line or all at once, in-process
models) and otherwise answers in JSON, one excerpt per request.
"""

import hashlib
import json
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.transactions import transaction

from neuronatlas.adapters.embedding import Encoder
from neuronatlas.adapters.llm import BackendOptions, check_backend, make_backend, parse_backend
from neuronatlas.adapters.llm_cache import CachedBackend, UsageReport, warn_if_budget_ran_out
from neuronatlas.adapters.plots import plot_real_vs_null, plot_scores_by_layer
from neuronatlas.adapters.progress import progress
from neuronatlas.adapters.runners import gather_layers, parse_runner, worker_name
from neuronatlas.adapters.storage import Storage
from neuronatlas.core.explain import NeuronRecords
from neuronatlas.core.prompts import PROMPT_VERSION
from neuronatlas.core.scoring import derangement
from neuronatlas.core.validity import MIN_GAP_NEURONS
from neuronatlas.datasets import activations as activations_contract
from neuronatlas.datasets import explanations as contract
from neuronatlas.defaults import SCORERS as DEFAULT_SCORERS
from neuronatlas.errors import InputError
from neuronatlas.expectations import explanations as suites
from neuronatlas.tasks.explain import (
    commit_tables,
    find_activation_run,
    load_neuron_records,
    needs_work,
    stage_tables,
    validate_staged,
)
from neuronatlas.tasks.score import (
    SCORER_VERSION,
    SCORERS,
    ChoiceScorer,
    Scorers,
    SpanScorer,
    explanation_sensitivity_of,
    layer_tables,
    retryable_failures,
    simulate_neuron,
    summary,
)
from neuronatlas.version import code_version

DEFAULT_SIMULATOR = "local:qwen2.5-coder-1.5b"
METHODS = ("auto", "line-by-line", "all-at-once", "json")
LOCAL_METHOD = "line-by-line"
"""What `auto` picks for in-process simulators: the method that listens (see the README's validity table)."""
READS_DIGITS = ("line-by-line", "all-at-once")


@dataclass(frozen=True)
class ScorePlan:
    storage: Storage
    explanations_run: str
    explanations_manifest: dict[str, Any]
    method: str
    scorers: tuple[str, ...]


def committed_run(storage: Storage, dataset: str, run: str | None, command: str) -> str:
    """The named committed run of `dataset` (a top-level folder), or the only one there."""
    found = [name for name in storage.list(dataset) if storage.is_committed(f"{dataset}/{name}")]
    if run is None and len(found) == 1:
        return found[0]
    if run is not None and run in found:
        return run
    what = f"--{dataset} {run}: no run of that id" if run else f"--{dataset}: name one"
    raise InputError(f"{what} under {storage.uri()} (found: {', '.join(found) or 'none'}); run `neuronatlas {command}`")


AUTO_SCORERS = ("simulation", "embedding", "fuzzing")
"""What `--scorers auto` (the default) runs with a local simulator. Fuzzing is among them because
it is the scorer that puts every oracle neuron's correct explanation far above its null with the
shipped 1.5B model (README, "Do the scores mean anything?"); it costs about 16 s per explanation."""
READS_CHOICES = ("detection", "fuzzing")
"""Scorers that read yes/no probabilities off the prompt: local models only."""


def parse_list(value: str, option: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated choice of `allowed` names, in the given order, without repeats."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names or any(name not in allowed for name in names):
        raise InputError(f"{option} {value}: expected a comma-separated list of {', '.join(allowed)}")
    return names


def parse_scorers(value: str, reads_probabilities: bool = True) -> tuple[str, ...]:
    """`--scorers`: a list of SCORERS, or "auto": simulation, embedding and, when the simulator
    can read prompt probabilities (a local model), fuzzing."""
    if value.strip() == "auto":
        return AUTO_SCORERS if reads_probabilities else tuple(s for s in AUTO_SCORERS if s not in READS_CHOICES)
    return parse_list(value, "--scorers", SCORERS)


def check_score_inputs(
    root: str,
    explanations: str | None,
    simulator: str,
    method: str,
    scale: int,
    options: BackendOptions | None = None,
    scorers: str = DEFAULT_SCORERS,
) -> ScorePlan:
    """Everything checkable before a model loads; the simulator too unless `options` is None
    (a backend object was passed in)."""
    spec = parse_backend(simulator, "--simulator")
    chosen_scorers = parse_scorers(scorers, spec.kind == "local")
    if options is not None and "simulation" in chosen_scorers:
        check_backend(simulator, "--simulator", options)
    if method not in METHODS:
        raise InputError(f"--method {method}: expected one of {', '.join(METHODS)}")
    if method in READS_DIGITS and spec.kind != "local":
        raise InputError(f"--method {method}: {simulator} cannot read prompt probabilities; use --method json")
    if not 1 <= scale <= 10:
        raise InputError(f"--scale {scale}: expected 1 to 10")
    storage = Storage.open(root)
    run = committed_run(storage, "explanations", explanations, "explain")
    chosen = method if method != "auto" else (LOCAL_METHOD if spec.kind == "local" else "json")
    manifest = storage.read_json(f"explanations/{run}/_manifest.json")
    return ScorePlan(storage, run, manifest, chosen, chosen_scorers)


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
def simulate_and_score(
    root: str = "./atlas",
    explanations: str | None = None,
    simulator: str = DEFAULT_SIMULATOR,
    method: str = "auto",
    scale: int = 9,
    placeholder: str = "unknown",
    seed: int = 0,
    scorers: str = DEFAULT_SCORERS,
    options: BackendOptions | None = None,
    backend: Any = None,
    runner: str = "local",
) -> ScoreResult:
    """Score every explanation of a run with each scorer (simulation: simulated activations;
    embedding: span AUC) and the token-lookup baseline; `backend` replaces `simulator` in tests.
    With a Dask `runner`, each layer's neurons are a task on a worker with its own models."""
    logger = get_run_logger()
    options = options or BackendOptions()
    plan = check_score_inputs(root, explanations, simulator, method, scale, None if backend else options, scorers)
    storage = plan.storage
    distributed = parse_runner(runner).distributed
    if distributed and backend is not None:
        raise InputError("--runner dask: a backend object cannot be sent to workers; name the simulator")
    llm = CachedBackend(backend or make_backend(simulator, "--simulator", options, storage), storage)
    if plan.method in READS_DIGITS and not llm.can_read_digits:
        raise InputError(f"--method {plan.method}: {llm.id} cannot read prompt probabilities")
    if scorers.strip() == "auto" and not llm.can_read_digits:
        plan = replace(plan, scorers=parse_scorers(scorers, reads_probabilities=False))
    asks = [name for name in READS_CHOICES if name in plan.scorers]
    if asks and not llm.can_read_digits:
        raise InputError(f"--scorers {','.join(asks)}: {llm.id} cannot read prompt probabilities")
    simulating = "simulation" in plan.scorers
    activation_run = find_activation_run(storage, plan.explanations_manifest["activations_run"])
    neurons = [tuple(pair) for pair in plan.explanations_manifest["neurons"]]
    sign = plan.explanations_manifest["parameters"].get("sign", "positive")  # the side that was explained
    parameters = {
        "method": plan.method,
        "scale": scale,
        "placeholder": placeholder,
        "seed": seed,
        "prompt_version": PROMPT_VERSION,
        "scorer_version": SCORER_VERSION,
        "scorers": list(plan.scorers),
        "encoder": Encoder.id if "embedding" in plan.scorers else None,
    }
    run = contract.run_id("s", plan.explanations_run, llm.id if simulating else None, parameters)
    partner = _control_partners(neurons, seed)
    paths = {
        "simulations": contract.simulations_path(run),
        "control": contract.control_path(run),
        "scores": contract.scores_path(run),
    }
    layers = sorted({layer for layer, _ in neurons})
    explanation_table = storage.read_parquet(
        contract.explanations_path(plan.explanations_run), schema=contract.EXPLANATIONS_SCHEMA
    )
    digests = {layer: _explanations_digest(explanation_table, layer) for layer in layers}
    pending = [layer for layer in layers if _needs_scoring(storage, f"{paths['scores']}/layer={layer}", digests[layer])]
    context = {
        "run_id": run,
        "explanations_run": plan.explanations_run,
        "activations_run": activation_run.run_id,
        "simulator": llm.id if simulating else None,
        "sign": sign,
        "parameters": parameters,
        "code_version": code_version(),
        "prefect_flow_run_id": str(flow_run.get_id() or ""),
    }
    logger.info(
        "run %s: %d neurons in %d layers, %d layers to score (%s)",
        run,
        len(neurons),
        len(layers),
        len(pending),
        plan.method,
    )
    started = time.perf_counter()
    todo = [pair for pair in neurons if pair[0] in pending]
    work = ScoreWork(
        storage,
        activation_run,
        neurons,
        partner,
        sign,
        explanation_table,
        digests,
        paths,
        plan,
        scale,
        placeholder,
        context,
    )
    with progress("simulating", len(todo), logger, "neurons", "neurons") as update:
        if distributed:  # one task per layer, on a worker with models of its own
            futures = [(layer, score_layer_task.submit(work, layer, simulator, options)) for layer in pending]
            gather_layers(futures, llm, work.of_layer, update)
        else:
            scoring = make_scorers(plan.scorers, llm, options)
            done = 0
            for layer in pending:
                work.run(layer, scoring, update, done)
                done += len(work.of_layer(layer))
    return _finish(storage, paths, run, plan, llm, context, time.perf_counter() - started, bool(pending), seed)


def make_scorers(chosen: tuple[str, ...], llm: CachedBackend, options: BackendOptions) -> Scorers:
    asks = tuple(name for name in ("detection", "fuzzing") if name in chosen)
    return Scorers(
        llm if "simulation" in chosen else None,
        SpanScorer(Encoder(options.device)) if "embedding" in chosen else None,
        ChoiceScorer(llm) if asks else None,
        asks,
    )


@dataclass(frozen=True)
class ScoreWork:
    """What scoring one layer needs, in the flow's process or on a Dask worker."""

    storage: Storage
    activation_run: Any
    neurons: list[tuple[int, int]]
    partner: dict[tuple[int, int], tuple[int, int]]
    sign: str
    explanations: pa.Table
    digests: dict[int, str]
    paths: dict[str, str]
    plan: ScorePlan
    scale: int
    placeholder: str
    context: dict[str, Any]

    def of_layer(self, layer: int) -> list[int]:
        return [neuron for chosen_layer, neuron in self.neurons if chosen_layer == layer]

    def run(self, layer: int, scoring: Scorers, update: Any, done_before: int) -> None:
        """Score the layer's explanations with every scorer and commit its partitions."""
        records = _records_with_partners(
            self.storage, self.activation_run, layer, self.of_layer(layer), self.partner, self.sign
        )
        table = self.explanations
        outcomes = []
        for done, neuron in enumerate(self.of_layer(layer), start=done_before + 1):
            rows = table.filter(pc.and_(pc.equal(table["layer"], layer), pc.equal(table["neuron"], neuron))).to_pylist()
            control = records.get(self.partner.get((layer, neuron), (-1, -1)))
            outcomes.append(
                simulate_neuron(
                    scoring, records[(layer, neuron)], rows, control, self.plan.method, self.scale, self.placeholder
                )
            )
            update(done, done)
        tables = layer_tables(layer, outcomes)
        retry = {"retryable_failures": retryable_failures(outcomes), "explanations_digest": self.digests[layer]}
        context = {**self.context, **retry, "worker": worker_name()}
        _commit(self.storage, self.paths, layer, tables, self.activation_run.d_mlp, self.scale, context)


@task(cache_policy=NO_CACHE)
def score_layer_task(work: ScoreWork, layer: int, simulator: str, options: BackendOptions) -> UsageReport:
    """One layer's explanations on a Dask worker, with a simulator and encoder of its own."""
    llm = CachedBackend(make_backend(simulator, "--simulator", options, work.storage), work.storage)
    work.run(layer, make_scorers(work.plan.scorers, llm, options), lambda *_: None, 0)
    return llm.report()


def _explanations_digest(table: pa.Table, layer: int) -> str:
    """Fingerprint of a layer's explanations (texts and failures): scores made from other
    explanations (before an explain rerun retried failed rows) are redone."""
    rows = table.filter(pc.equal(table["layer"], layer)).sort_by(
        [("neuron", "ascending"), ("explanation_id", "ascending")]
    )
    picked = rows.select(["neuron", "explanation_id", "explanation", "failure_reason"]).to_pylist()
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def _needs_scoring(storage: Storage, partition: str, digest: str) -> bool:
    if needs_work(storage, partition):
        return True
    return bool(storage.manifest(partition).get("explanations_digest") != digest)


def _control_partners(neurons: list[tuple[int, int]], seed: int) -> dict[tuple[int, int], tuple[int, int]]:
    """Neuron -> the other neuron whose records its explanations are scored on in the control."""
    if len(neurons) < 2:
        return {}
    permutation = derangement(len(neurons), np.random.default_rng(seed))
    return {neurons[i]: neurons[int(j)] for i, j in enumerate(permutation)}


def _records_with_partners(
    storage: Storage, run: Any, layer: int, layer_neurons: list[int], partner: dict, sign: str
) -> dict[tuple[int, int], NeuronRecords]:
    wanted: dict[int, set[int]] = {layer: set(layer_neurons)}
    for neuron in layer_neurons:
        if (layer, neuron) in partner:
            other_layer, other = partner[(layer, neuron)]
            wanted.setdefault(other_layer, set()).add(other)
    records = {}
    for read_layer, read_neurons in wanted.items():
        for neuron_records in load_neuron_records(storage, run, read_layer, sorted(read_neurons), sign):
            records[(read_layer, neuron_records.neuron)] = neuron_records
    return records


def _commit(
    storage: Storage, paths: dict, layer: int, tables: dict[str, pa.Table], d_mlp: int, scale: int, context: dict
) -> None:
    partitions = {name: activations_contract.layer_partition(paths[name], layer) for name in tables}
    schemas = {
        "simulations": contract.SIMULATIONS_SCHEMA,
        "control": contract.CONTROL_SCHEMA,
        "scores": contract.SCORES_SCHEMA,
    }
    keys = ["layer", "neuron", "explanation_id", "sequence_id"]
    checks = {
        "simulations": ("simulations", suites.simulations_frame, suites.simulations_suite("simulations", scale, keys)),
        "control": (
            "control_simulations",
            suites.simulations_frame,
            suites.simulations_suite("control_simulations", scale, keys),
        ),
        "scores": ("scores", suites.scores_frame, suites.scores_suite(d_mlp)),
    }
    non_empty = {name: table for name, table in tables.items() if table.num_rows or name == "scores"}
    with transaction() as txn:
        txn.set("storage", storage)
        txn.set("partitions", [partitions[name] for name in non_empty])
        staged = stage_tables(storage, partitions, non_empty)
        reports = validate_staged(storage, staged, schemas, checks, f"layer {layer} scores")
        manifest = {
            **context,
            "layer": layer,
            "rows": {name: table.num_rows for name, table in tables.items()},
            "validation": {name: report.to_manifest() for name, report in reports.items()},
        }
        commit_tables(storage, staged, partitions, manifest)


def _finish(
    storage: Storage,
    paths: dict,
    run: str,
    plan: ScorePlan,
    llm: CachedBackend,
    context: dict,
    seconds: float,
    changed: bool,
    seed: int,
) -> ScoreResult:
    scores = storage.read_parquet(paths["scores"], schema=contract.SCORES_SCHEMA).to_pandas()
    sensitivity = None
    if storage.list(paths["simulations"]) and storage.list(paths["control"]):
        sensitivity = explanation_sensitivity_of(
            storage.read_parquet(paths["simulations"], schema=contract.SIMULATIONS_SCHEMA).to_pandas(),
            storage.read_parquet(paths["control"], schema=contract.CONTROL_SCHEMA).to_pandas(),
        )
    figures = summary(scores, sensitivity, seed)
    plot = f"{paths['scores']}/real_vs_null.png"
    layer_plot = f"{paths['scores']}/scores_by_layer.png"
    if changed or not storage.exists(f"{paths['scores']}/_manifest.json"):
        what = f"{run} · {llm.id.split('@')[0]} · {plan.method}"
        storage.write_bytes(plot, plot_real_vs_null(scores, what))
        storage.write_bytes(layer_plot, plot_scores_by_layer(scores[scores["is_best"]], what))
        manifest = {
            **context,
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
        if gap is None:
            continue
        verdict = "beats" if gap["significant"] else "does NOT significantly beat"
        if gap["n"] < MIN_GAP_NEURONS:
            verdict = f"cannot tell (fewer than {MIN_GAP_NEURONS} neurons) whether it beats"
        line = "%s: real %.3f vs null %.3f, gap %+.3f (95%% CI %+.3f..%+.3f, n=%d): %s its permutation null"
        log = logger.info if gap["significant"] else logger.warning
        log(line, name, gap["real"], gap["null"], gap["gap"], *gap["ci95"], gap["n"], verdict)
    warn_if_budget_ran_out(logger, llm)
    return ScoreResult(
        run, storage.uri(paths["scores"]), figures, storage.uri(plot), storage.uri(layer_plot), llm.usage_manifest()
    )
