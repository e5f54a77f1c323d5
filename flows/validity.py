"""`validity`: does a score measure anything? (docs/method.md §7)

Explains a spread of neurons (by default 24 across 3 layers) with each explainer prompt format,
scores them with every scorer, and reports per scorer the real mean, the permutation-null mean
and their paired gap with a bootstrap 95% interval, beside reference points: the token-lookup
baseline (no LLM) and oracle neurons built to fire on one token class, whose correct explanation
must score far above the null. Writes `validity/<run>/report.md`, `gaps.png` and a manifest.
"""

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow.compute as pc
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from neuronatlas.adapters.embedding import Encoder
from neuronatlas.adapters.llm import make_backend
from neuronatlas.adapters.llm_cache import CachedBackend
from neuronatlas.adapters.plots import plot_gaps
from neuronatlas.config import LLMOptions, ValidityConfig, parameters, with_signature
from neuronatlas.core.oracle import score_oracles
from neuronatlas.core.prompts import PROMPT_VERSION
from neuronatlas.core.report import gap_rows, render_report
from neuronatlas.core.scorers import build_scorers
from neuronatlas.core.scorers.simulation import choose_method
from neuronatlas.datasets import corpus as corpus_contract
from neuronatlas.datasets import explanations as contract
from neuronatlas.flows.explain import explain_neurons
from neuronatlas.flows.score import simulate_and_score
from neuronatlas.plans import ValidityPlan, fit_scorers, plan_validity
from neuronatlas.version import code_version

ORACLE_WINDOWS = 600
"""Corpus windows the oracle neurons are built over."""


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
@with_signature(parameters(ValidityConfig))
def validity(
    root: str = "./atlas",
    options: LLMOptions | None = None,
    explainer_backend: Any = None,
    simulator_backend: Any = None,
    plan: Any = None,
    **settings: Any,
) -> ValidityResult:
    """Explain the chosen neurons with each prompt format, score them with every scorer, compare
    each with its permutation null, and add the reference points (`settings`: the fields of
    `ValidityConfig`); backends replace the named models in tests."""
    options = options or LLMOptions()
    plan = plan or plan_validity(root, ValidityConfig.of(settings), None if explainer_backend else options)
    config, storage = plan.config, plan.storage
    explain_llm = explainer_backend or make_backend(config.explainer, "--explainer", options, storage)
    simulate_llm = simulator_backend or (
        explain_llm
        if config.simulator == config.explainer
        else make_backend(config.simulator, "--simulator", options, storage)
    )
    if set(plan.scorers) - {"embedding"}:  # auto as this simulator allows
        scorers, choice = fit_scorers(config.scorers, simulate_llm)
        plan = replace(plan, scorers=scorers)
        get_run_logger().info("%s", choice)
    parameters = {
        "formats": list(plan.formats),
        "samples": config.samples,
        "scorers": list(plan.scorers),
        "methods": list(plan.methods),
        "seed": config.seed,
    }
    run = contract.run_id("v", plan.run.run_id, plan.neurons, explain_llm.id, simulate_llm.id, parameters)
    started = time.perf_counter()
    rows, diagnostics, runs = _compare(root, plan, options, explain_llm, simulate_llm)
    oracle_rows = _oracles(plan, CachedBackend(simulate_llm, storage)) if config.oracles else []
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
        "seconds": round(time.perf_counter() - started, 1),
    }
    report = render_report(context, rows, diagnostics, oracle_rows)
    folder = f"validity/{run}"
    storage.write_bytes(f"{folder}/report.md", report.encode())
    storage.write_bytes(f"{folder}/gaps.png", plot_gaps(rows, f"validity {run}: {len(plan.neurons)} neurons"))
    storage.write_json(
        f"{folder}/_manifest.json", {**context, "rows": rows, "diagnostics": diagnostics, "oracles": oracle_rows}
    )
    get_run_logger().info("validity report: %s", storage.uri(f"{folder}/report.md"))
    return ValidityResult(run, report, storage.uri(f"{folder}/report.md"), storage.uri(f"{folder}/gaps.png"), rows)


def _compare(
    root: str, plan: ValidityPlan, options: LLMOptions, explain_llm: Any, simulate_llm: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, str]]]:
    """Explain with each format, score with each method: (gap rows, simulator diagnostics, runs)."""
    config = plan.config
    selection = ",".join(f"{layer}:{neuron}" for layer, neuron in plan.neurons)
    rows: list[dict[str, Any]] = []
    diagnostics: list[dict[str, Any]] = []
    runs: dict[str, dict[str, str]] = {}
    for form in plan.formats:
        explained = explain_neurons(
            root=root,
            activations=plan.run.run_id,
            neurons=selection,
            explainer=config.explainer,
            samples=config.samples,
            prompt_format=form,
            seed=config.seed,
            options=options,
            backend=explain_llm,
        )
        if simulate_llm is not explain_llm:
            _release(explain_llm)
        for method in plan.methods:
            scored = simulate_and_score(
                root=root,
                explanations=explained.run_id,
                simulator=config.simulator,
                method=method,
                seed=config.seed,
                scorers=",".join(plan.scorers),
                options=options,
                backend=simulate_llm,
            )
            key = form if len(plan.methods) == 1 else f"{form} / {method}"
            runs[key] = {"explanations": explained.run_id, "scores": scored.run_id}
            rows += gap_rows(scored.summary, key, method == plan.methods[0], rows)
            diagnostics.append(
                {
                    "explanations": key,
                    "explanation_sensitivity": scored.summary["explanation_sensitivity"],
                    "mean_digit_mass": scored.summary["mean_digit_mass"],
                    "mean_best_embedding_auc": scored.summary["mean_best_embedding_auc"],
                }
            )
    return rows, diagnostics, runs


def _release(llm: Any) -> None:
    """Free an in-process model before another loads (two 1.5B models do not fit beside each other)."""
    release = getattr(llm, "release", None)
    if release is not None:
        release()


def _oracles(plan: ValidityPlan, llm: CachedBackend) -> list[dict[str, Any]]:
    """Each oracle neuron's correct explanation, scored on its own records and (the null) on
    another oracle's, with the chosen scorers and the lookup baseline."""
    storage, seed = plan.storage, plan.config.seed
    corpus = storage.read_parquet(
        corpus_contract.corpus_path(plan.run.manifest["corpus_id"]), schema=corpus_contract.SCHEMA
    )
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(corpus.num_rows, size=min(ORACLE_WINDOWS, corpus.num_rows), replace=False))
    sample = corpus.select(["sequence_id", "tokens"]).take(pc.cast(picked, "int64")).to_pydict()
    windows = [(int(s), tuple(t)) for s, t in zip(sample["sequence_id"], sample["tokens"], strict=True)]
    # over an API the oracles are simulated with JSON (line-by-line runs in process only)
    method = choose_method(plan.methods[0], llm.can_read_digits and llm.id.startswith("local:"))
    return score_oracles(build_scorers(plan.scorers, llm, Encoder, method), windows, rng)
