"""`validity`: does a score measure anything? (issue 5, METHOD.md §7-8)

Explains a spread of neurons (by default 24 across 3 layers) with each explainer prompt format,
scores them with every scorer, and reports per scorer the real mean, the permutation-null mean
and their paired gap with a bootstrap 95% interval, beside reference points: the token-lookup
baseline (no LLM) and oracle neurons built to fire on one token class, whose correct explanation
must score far above the null. Writes `validity/<run>/report.md`, `gaps.png` and a manifest.
"""

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from neuronatlas.adapters.embedding import Encoder
from neuronatlas.adapters.llm import BackendOptions, check_backend, make_backend, parse_backend
from neuronatlas.adapters.llm_cache import CachedBackend
from neuronatlas.adapters.plots import plot_gaps
from neuronatlas.adapters.storage import Storage
from neuronatlas.core.layers import parse_layers
from neuronatlas.core.oracle import ORACLES, oracle_records
from neuronatlas.core.prompts import PROMPT_VERSION
from neuronatlas.core.scoring import derangement
from neuronatlas.datasets import corpus as corpus_contract
from neuronatlas.datasets import explanations as contract
from neuronatlas.defaults import SCORERS as DEFAULT_SCORERS
from neuronatlas.errors import InputError
from neuronatlas.flows.explain import DEFAULT_EXPLAINER, FORMATS, explain_neurons
from neuronatlas.flows.score import (
    DEFAULT_SIMULATOR,
    LOCAL_METHOD,
    METHODS,
    parse_list,
    parse_scorers,
    simulate_and_score,
)
from neuronatlas.tasks.explain import ActivationRun, find_activation_run
from neuronatlas.tasks.score import ChoiceScorer, Scorers, SpanScorer, simulate_neuron
from neuronatlas.version import code_version

ORACLE_WINDOWS = 600
"""Corpus windows the oracle neurons are built over."""


@dataclass(frozen=True)
class ValidityPlan:
    storage: Storage
    run: ActivationRun
    neurons: list[tuple[int, int]]
    formats: tuple[str, ...]
    scorers: tuple[str, ...]
    methods: tuple[str, ...]


def spread_layers(extracted: list[int], count: int) -> list[int]:
    """`count` layers spread over the extracted ones: the middles of `count` equal slices."""
    if len(extracted) <= count:
        return list(extracted)
    return [extracted[int((2 * i + 1) * len(extracted) / (2 * count))] for i in range(count)]


def check_validity_inputs(
    root: str,
    activations: str | None,
    layers: str,
    neurons: int,
    formats: str,
    scorers: str,
    methods: str,
    seed: int,
    explainer: str,
    simulator: str,
    options: BackendOptions | None,
) -> ValidityPlan:
    chosen_formats = parse_list(formats, "--formats", FORMATS)
    chosen_scorers = parse_scorers(scorers, parse_backend(simulator, "--simulator").kind == "local")
    chosen_methods = parse_list(methods, "--methods", METHODS)
    if neurons < 2:
        raise InputError(f"--neurons {neurons}: the permutation null needs at least 2")
    if options is not None:
        check_backend(explainer, "--explainer", options)
        if "simulation" in chosen_scorers:
            check_backend(simulator, "--simulator", options)
    storage = Storage.open(root)
    run = find_activation_run(storage, activations)
    spec = ",".join(map(str, spread_layers(run.layers, 3))) if layers == "auto" else layers
    try:
        chosen_layers = parse_layers(spec, run.manifest["n_layers_in_model"])
    except ValueError as error:
        raise InputError(f"--layers {layers}: {error}") from None
    missing = [layer for layer in chosen_layers if layer not in run.layers]
    if missing:
        raise InputError(f"--layers {layers}: layer {missing[0]} was not extracted in {run.run_id} ({run.layers})")
    if neurons > len(chosen_layers) * run.d_mlp:
        raise InputError(f"--neurons {neurons}: the chosen layers have {len(chosen_layers) * run.d_mlp}")
    picked = spread_neurons(chosen_layers, neurons, run.d_mlp, np.random.default_rng(seed))
    return ValidityPlan(storage, run, picked, chosen_formats, chosen_scorers, chosen_methods)


def spread_neurons(layers: list[int], count: int, d_mlp: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """`count` neurons sampled without replacement, as even a share of each layer as the count allows."""
    shares = [count // len(layers) + (i < count % len(layers)) for i in range(len(layers))]
    picked = []
    for layer, share in zip(layers, shares, strict=True):
        picked += [(layer, int(neuron)) for neuron in rng.choice(d_mlp, size=share, replace=False)]
    return sorted(picked)


@dataclass(frozen=True)
class ValidityResult:
    run_id: str
    report: str
    """The markdown report."""
    report_uri: str
    plot_uri: str
    rows: list[dict[str, Any]]
    """One per (explanations, scorer): real, null, gap, ci95, n, significant."""


@flow(name="validity", log_prints=False)
def validity(
    root: str = "./atlas",
    activations: str | None = None,
    layers: str = "auto",
    neurons: int = 24,
    formats: str = "tokens",
    samples: int = 2,
    scorers: str = DEFAULT_SCORERS,
    methods: str = "auto",
    explainer: str = DEFAULT_EXPLAINER,
    simulator: str = DEFAULT_SIMULATOR,
    seed: int = 0,
    oracles: bool = True,
    options: BackendOptions | None = None,
    explainer_backend: Any = None,
    simulator_backend: Any = None,
) -> ValidityResult:
    """Explain `neurons` neurons with each of `formats`, score them with every scorer, compare each
    with its permutation null, and add the reference points; backends replace the specs in tests."""
    logger = get_run_logger()
    options = options or BackendOptions()
    plan = check_validity_inputs(
        root,
        activations,
        layers,
        neurons,
        formats,
        scorers,
        methods,
        seed,
        explainer,
        simulator,
        None if explainer_backend else options,
    )
    storage = plan.storage
    explain_llm = explainer_backend or make_backend(explainer, "--explainer", options, storage)
    simulate_llm = simulator_backend or (
        explain_llm if simulator == explainer else make_backend(simulator, "--simulator", options, storage)
    )
    parameters = {
        "formats": list(plan.formats),
        "samples": samples,
        "scorers": list(plan.scorers),
        "methods": list(plan.methods),
        "seed": seed,
    }
    run = contract.run_id("v", plan.run.run_id, plan.neurons, explain_llm.id, simulate_llm.id, parameters)
    selection = ",".join(f"{layer}:{neuron}" for layer, neuron in plan.neurons)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    diagnostics: list[dict[str, Any]] = []
    runs: dict[str, dict[str, str]] = {}
    for form in plan.formats:
        explained = explain_neurons(
            root=root,
            activations=plan.run.run_id,
            neurons=selection,
            explainer=explainer,
            samples=samples,
            prompt_format=form,
            seed=seed,
            options=options,
            backend=explain_llm,
        )
        if simulate_llm is not explain_llm:
            _release(explain_llm)
        for method in plan.methods:
            scored = simulate_and_score(
                root=root,
                explanations=explained.run_id,
                simulator=simulator,
                method=method,
                seed=seed,
                scorers=",".join(plan.scorers),
                options=options,
                backend=simulate_llm,
            )
            key = form if len(plan.methods) == 1 else f"{form} / {method}"
            runs[key] = {"explanations": explained.run_id, "scores": scored.run_id}
            for name, gap in scored.summary["scorers"].items():
                if gap is None or (name != "simulation" and method != plan.methods[0]):
                    continue  # the embedding and lookup figures do not depend on the simulation method
                if name == "lookup baseline" and any(r["scorer"] == name for r in rows):
                    continue  # the same for every explanation format
                label = name if name == "lookup baseline" else f"{key} · {name}"
                every = scored.summary["scorers_all_samples"][name]
                rows.append({"label": label, "explanations": key, "scorer": name, **gap, "all_samples": every})
            diagnostics.append(
                {
                    "explanations": key,
                    "explanation_sensitivity": scored.summary["explanation_sensitivity"],
                    "mean_digit_mass": scored.summary["mean_digit_mass"],
                    "mean_best_embedding_auc": scored.summary["mean_best_embedding_auc"],
                }
            )
    oracle_rows = _oracles(storage, plan, simulate_llm, seed) if oracles else []
    seconds = time.perf_counter() - started
    context = {
        "run_id": run,
        "activations_run": plan.run.run_id,
        "model": plan.run.manifest.get("model"),
        "neurons": [list(pair) for pair in plan.neurons],
        "layers": sorted({layer for layer, _ in plan.neurons}),
        "explainer": explain_llm.id,
        "simulator": simulate_llm.id if "simulation" in plan.scorers else None,
        "encoder": Encoder.id if "embedding" in plan.scorers else None,
        "parameters": parameters,
        "prompt_version": PROMPT_VERSION,
        "code_version": code_version(),
        "prefect_flow_run_id": str(flow_run.get_id() or ""),
        "runs": runs,
        "seconds": round(seconds, 1),
    }
    report = render_report(context, rows, diagnostics, oracle_rows)
    folder = f"validity/{run}"
    storage.write_bytes(f"{folder}/report.md", report.encode())
    storage.write_bytes(f"{folder}/gaps.png", plot_gaps(rows, f"validity {run}: {len(plan.neurons)} neurons"))
    storage.write_json(
        f"{folder}/_manifest.json", {**context, "rows": rows, "diagnostics": diagnostics, "oracles": oracle_rows}
    )
    logger.info("validity report: %s", storage.uri(f"{folder}/report.md"))
    return ValidityResult(run, report, storage.uri(f"{folder}/report.md"), storage.uri(f"{folder}/gaps.png"), rows)


def _release(llm: Any) -> None:
    """Free an in-process model before another loads (two 1.5B models do not fit beside each other)."""
    release = getattr(llm, "release", None)
    if release is not None:
        release()


def _oracles(storage: Storage, plan: ValidityPlan, llm: Any, seed: int) -> list[dict[str, Any]]:
    """Each oracle neuron's correct explanation, scored on its own records and (the null) on the
    next oracle's, with the chosen scorers and the lookup baseline."""
    corpus = storage.read_parquet(
        corpus_contract.corpus_path(plan.run.manifest["corpus_id"]), schema=corpus_contract.SCHEMA
    )
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(corpus.num_rows, size=min(ORACLE_WINDOWS, corpus.num_rows), replace=False))
    sample = corpus.select(["sequence_id", "tokens"]).take(pc.cast(picked, "int64")).to_pydict()
    windows = [(int(s), tuple(t)) for s, t in zip(sample["sequence_id"], sample["tokens"], strict=True)]
    records = [oracle_records(i, oracle, windows, rng) for i, oracle in enumerate(ORACLES)]
    partners = derangement(len(records), rng)
    cached = CachedBackend(llm, storage)
    method = plan.methods[0]
    if method == "auto":
        method = LOCAL_METHOD if cached.can_read_digits else "json"
    asks = tuple(name for name in ("detection", "fuzzing") if name in plan.scorers)
    scorers = Scorers(
        cached if "simulation" in plan.scorers else None,
        SpanScorer(Encoder()) if "embedding" in plan.scorers else None,
        ChoiceScorer(cached) if asks else None,
        asks,
    )
    rows = []
    for i, oracle in enumerate(ORACLES):
        explanation = [{"explanation_id": 0, "explanation": oracle.explanation, "failure_reason": None}]
        outcome = simulate_neuron(scorers, records[i], explanation, records[int(partners[i])], method, 9, "unknown")
        scores = outcome.explanations[0]
        rows.append(
            {
                "oracle": oracle.name,
                "explanation": oracle.explanation,
                "null_on": ORACLES[int(partners[i])].name,
                "simulation": scores.scores.top_and_random_score.value,
                "simulation_null": scores.null.value,
                "embedding": scores.embedding.value,
                "embedding_null": scores.embedding_null.value,
                **{
                    key: value
                    for name, (real, null) in scores.choices.items()
                    for key, value in ((name, real.value), (f"{name}_null", null.value))
                },
                "lookup baseline": outcome.lookup.value,
                "lookup_null": outcome.lookup_null.value,
            }
        )
    return rows


def _gap_text(gap: dict[str, Any] | None) -> str:
    if gap is None:
        return "—"
    return f"{_number(gap['gap'], True)} ({_number(gap['ci95'][0], True)} .. {_number(gap['ci95'][1], True)})"


def _short(backend_id: str | None) -> str:
    """A backend or model id without its checksum."""
    return backend_id.split("@")[0] if backend_id else "not run"


def _number(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def render_report(
    context: dict[str, Any], rows: list[dict[str, Any]], diagnostics: list[dict[str, Any]], oracles: list[dict]
) -> str:
    """The harness's markdown report."""
    layers = ", ".join(map(str, context["layers"]))
    lines = [
        f"# Validity report {context['run_id']}",
        "",
        f"- subject: {context['model']} (activation run {context['activations_run']}), "
        f"{len(context['neurons'])} neurons in layers {layers}",
        f"- explainer: {_short(context['explainer'])}; simulator: {_short(context['simulator'])}; "
        f"embedding: {_short(context['encoder'])}",
        f"- parameters: {context['parameters']}; prompt version {context['prompt_version']}; "
        f"code {context['code_version']}; {context['seconds']:.0f} s",
        "",
        "## Each scorer against its permutation null",
        "",
        "The null scores each explanation on another neuron's records (a seeded derangement). Each neuron's",
        "best sample (chosen on train/calibration spans, what gets published) counts once; the gap is the mean",
        "of real - null over neurons, its 95% interval a percentile bootstrap over neurons. The last column is",
        "the same gap over all samples (each neuron's samples averaged).",
        "",
        "| explanations | scorer | real | null | gap | 95% CI | real > null | verdict | all samples: gap, CI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = "**beats its null**" if row["significant"] else "not significant"
        lines.append(
            f"| {row['explanations'] if row['scorer'] != 'lookup baseline' else '(no LLM)'} | {row['scorer']} | "
            f"{_number(row['real'])} | {_number(row['null'])} | {_number(row['gap'], True)} | "
            f"{_number(row['ci95'][0], True)} .. {_number(row['ci95'][1], True)} | "
            f"{row['real_above_null']} of {row['n']} | {verdict} | {_gap_text(row.get('all_samples'))} |"
        )
    lines += [
        "",
        "## Does the simulator listen?",
        "",
        "Explanation sensitivity: mean correlation between simulations of different explanations on the same",
        "excerpts (target < 0.8; 1.0 means the explanation is ignored). Digit mass: probability on the digit",
        "tokens where the simulator reads an activation (target > 0.5).",
        "",
        "| explanations | explanation sensitivity | digit mass | best sample's embedding AUC |",
        "|---|---|---|---|",
    ]
    for row in diagnostics:
        lines.append(
            f"| {row['explanations']} | {_number(row['explanation_sensitivity'])} | "
            f"{_number(row['mean_digit_mass'])} | {_number(row['mean_best_embedding_auc'])} |"
        )
    if oracles:
        ran = [
            name
            for name in ("simulation", "embedding", "detection", "fuzzing")
            if any(r.get(name) is not None for r in oracles)
        ]
        columns = {name: f"{name}_null" for name in ran} | {"lookup baseline": "lookup_null"}
        lines += [
            "",
            "## Oracle neurons",
            "",
            "Synthetic neurons that fire 1.0 on one token class over real corpus windows. Real: the correct",
            "explanation on the oracle's records; null: the same explanation on another oracle's records.",
            "",
            "| oracle | explanation | null on | " + " | ".join(f"{name} real / null" for name in columns) + " |",
            "|---|---|---|" + "---|" * len(columns),
        ]
        for row in oracles:
            cells = [f"{_number(row.get(name))} / {_number(row.get(null))}" for name, null in columns.items()]
            lines.append(f"| {row['oracle']} | {row['explanation']} | {row['null_on']} | " + " | ".join(cells) + " |")
    lines += ["", "![paired gaps](gaps.png)", ""]
    return "\n".join(lines)
