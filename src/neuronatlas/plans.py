"""Checking a stage's config against its root and models, once, before any heavy work: the result
is a plan the flow trusts. The command builds the plan before Prefect starts (bad input fails in
a second, in one line) and hands it to the flow; a flow called without one builds it itself.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from neuronatlas.adapters.llm import check_backend, check_batch, parse_backend
from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.records import SIGNS
from neuronatlas.catalog.runs import ActivationRun, committed_corpus, committed_run, find_activation_run
from neuronatlas.config import (
    AtlasConfig,
    ExplainConfig,
    ExtractConfig,
    IngestConfig,
    LLMOptions,
    ScoreConfig,
    ValidityConfig,
)
from neuronatlas.core.layers import parse_layers, parse_neurons, spread_layers, spread_neurons
from neuronatlas.core.llm import LLMBackend
from neuronatlas.core.prompts import FORMATS
from neuronatlas.core.scorers import SCORERS, choose_scorers, parse_names
from neuronatlas.core.scorers.choices import READS_CHOICES
from neuronatlas.core.scorers.simulation import METHODS, choose_method, simulated_splits
from neuronatlas.errors import InputError


def _at_least(value: int, option: str, least: int) -> None:
    if value < least:
        raise InputError(f"{option} {value}: must be at least {least}")


def _choice(value: str, option: str, parse: Any, *args: Any) -> Any:
    """`parse(value, *args)` with its ValueError as an InputError naming the option."""
    try:
        return parse(value, *args)
    except ValueError as error:
        raise InputError(f"{option} {value}: {error}") from None


# -- ingest ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestPlan:
    config: IngestConfig
    storage: Storage


def plan_ingest(root: str, config: IngestConfig) -> IngestPlan:
    """Every check that needs no full read of the source."""
    from neuronatlas.adapters.models import resolve_model
    from neuronatlas.adapters.sources import check_source

    if not config.source.strip():
        raise InputError(f"--source {config.source!r}: empty")
    if config.window < 2:
        raise InputError(f"--window {config.window}: must be at least 2 tokens")
    if config.encoding_errors not in ("strict", "replace"):
        raise InputError(f"--encoding-errors {config.encoding_errors}: expected strict or replace")
    check_source(source_spec(config))
    resolve_model(config.tokenizer_of)
    storage = Storage.open(root)
    storage.check_writable()  # last: bad input is refused before anything is written
    return IngestPlan(config, storage)


def source_spec(config: IngestConfig) -> Any:
    from neuronatlas.adapters.sources import SourceSpec

    return SourceSpec(config.source, config.text_field, config.id_field, config.split, config.encoding_errors)  # type: ignore[arg-type]


# -- extract -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractPlan:
    config: ExtractConfig
    storage: Storage
    source: Any
    """The subject model's `ModelSource`."""
    corpus_id: str
    corpus_manifest: dict[str, Any]
    layers: list[int]
    n_layers: int


def check_extract(config: ExtractConfig) -> None:
    """What needs no root nor model: the counts and the seed."""
    _at_least(config.top_k, "--top-k", 1)
    _at_least(config.random_k, "--random-k", 0)
    _at_least(config.batch_size, "--batch-size", 1)
    _at_least(config.layers_per_shard, "--layers-per-shard", 0)
    _at_least(config.seed, "--seed", 0)
    if config.limit is not None:
        _at_least(config.limit, "--limit", 1)


def plan_extract(root: str, config: ExtractConfig) -> ExtractPlan:
    """Model, corpus, tokenizer, layers, K, device and dtype, before the model is loaded."""
    from neuronatlas.adapters.extraction import pick_device, pick_dtype
    from neuronatlas.adapters.models import layer_count, open_tokenizer, resolve_model
    from neuronatlas.datasets import corpus as corpus_contract

    check_extract(config)
    pick_dtype(config.dtype, pick_device(config.device))
    storage = Storage.open(root)
    source = resolve_model(config.model)
    corpus_id = committed_corpus(storage, config.corpus)
    manifest = storage.manifest(corpus_contract.corpus_path(corpus_id))
    tokenizer = open_tokenizer(config.model)
    if manifest["tokenizer"].get("fingerprint") != tokenizer.fingerprint:
        raise InputError(
            f"--corpus {corpus_id}: tokenised with {manifest['tokenizer']['model']}, whose tokenizer differs from "
            f"{config.model}'s; ingest the source again with --tokenizer-of {config.model}"
        )
    n_excerpts = manifest["rows"] if config.limit is None else min(config.limit, manifest["rows"])
    if config.top_k > n_excerpts:
        raise InputError(f"--top-k {config.top_k}: larger than the corpus ({n_excerpts} excerpts)")
    n_layers = layer_count(source)
    chosen = _choice(config.layers, "--layers", parse_layers, n_layers)
    storage.check_writable()
    return ExtractPlan(config, storage, source, corpus_id, manifest, chosen, n_layers)


# -- explain -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExplainPlan:
    config: ExplainConfig
    storage: Storage
    run: ActivationRun
    neurons: list[tuple[int, int]]
    """Sorted (layer, neuron) pairs."""

    @property
    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.neurons})

    def of_layer(self, layer: int) -> list[int]:
        return [neuron for chosen_layer, neuron in self.neurons if chosen_layer == layer]


def check_explain(config: ExplainConfig, options: LLMOptions | None) -> None:
    """What needs no root: samples, sampling, seed, the explainer (unless `options` is None: a
    backend object was passed in), sign, prompt format, scale."""
    _at_least(config.samples, "--samples", 1)
    _at_least(config.max_tokens, "--max-tokens", 1)
    _at_least(config.seed, "--seed", 0)
    check_temperature(config.temperature, config.samples)
    if options is not None:
        check_backend(config.explainer, "--explainer", options)
        check_batch(options, "local", (config.explainer, "--explainer"))
    if config.sign not in SIGNS:
        raise InputError(f"--sign {config.sign}: expected positive or negative")
    if config.prompt_format not in FORMATS:
        raise InputError(f"--prompt-format {config.prompt_format}: expected one of {', '.join(FORMATS)}")
    check_scale(config.scale)


def check_temperature(temperature: float, samples: int) -> None:
    """Not negative; 0 (greedy) gives one answer, so one sample."""
    if not temperature >= 0:
        raise InputError(f"--temperature {temperature:g}: must be at least 0")
    if temperature == 0 and samples > 1:
        raise InputError(
            f"--temperature 0 with --samples {samples}: greedy decoding gives one answer; use --samples 1 or a "
            "temperature above 0"
        )


def check_scale(scale: int) -> None:
    if not 1 <= scale <= 10:
        raise InputError(f"--scale {scale}: expected 1 to 10")


def plan_explain(root: str, config: ExplainConfig, options: LLMOptions | None) -> ExplainPlan:
    check_explain(config, options)
    storage = Storage.open(root)
    run = find_activation_run(storage, config.activations)
    chosen = _choice(config.layers, "--layers", parse_layers, run.manifest["n_layers_in_model"])
    missing = [layer for layer in chosen if layer not in run.layers]
    if missing and config.layers != "all":
        raise InputError(
            f"--layers {config.layers}: layer {missing[0]} was not extracted in {run.run_id} ({run.layers})"
        )
    chosen = [layer for layer in chosen if layer in run.layers]
    rng = np.random.default_rng(config.seed)
    pairs = _choice(config.neurons, "--neurons", parse_neurons, chosen, run.d_mlp, rng)
    storage.check_writable()
    return ExplainPlan(config, storage, run, pairs)


# -- score -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScorePlan:
    config: ScoreConfig
    storage: Storage
    explanations_run: str
    explanations_manifest: dict[str, Any]
    method: str
    """The simulation method, `auto` resolved for the simulator named."""
    scorers: tuple[str, ...]
    choice: str = ""
    """Which scorers and method run, and why (see `fit_to_simulator`)."""


def check_score(config: ScoreConfig, options: LLMOptions | None) -> tuple[str, tuple[str, ...]]:
    """(method, scorers) for the simulator the config names; its backend too unless `options`
    is None (a backend object was passed in)."""
    _at_least(config.seed, "--seed", 0)
    local = parse_backend(config.simulator, "--simulator").kind == "local"
    scorers = _choice(config.scorers, "--scorers", choose_scorers, local)
    if options is not None and set(scorers) - {"embedding"}:
        check_backend(config.simulator, "--simulator", options)
        check_batch(options, "local", (config.simulator, "--simulator"))
    if config.method not in METHODS:
        raise InputError(f"--method {config.method}: expected one of {', '.join(METHODS)}")
    if not local and config.method == "line-by-line":
        raise InputError(f"--method line-by-line: runs in process only; {config.simulator}: use all-at-once or json")
    if not local and config.method == "all-at-once" and options is not None and options.tokenizer is None:
        raise InputError(
            f"--method all-at-once: {config.simulator}: needs the model's chat template to build the prompt; "
            "pass --llm-tokenizer (a shipped model or model folder)"
        )
    check_scale(config.scale)
    _choice(config.splits, "--splits", simulated_splits)
    if config.method == "all-at-once":  # over an API: checked against the server when it is built
        return config.method, scorers
    return choose_method(config.method, local), scorers


def plan_score(root: str, config: ScoreConfig, options: LLMOptions | None) -> ScorePlan:
    method, scorers = check_score(config, options)
    storage = Storage.open(root)
    run = committed_run(storage, "explanations", config.explanations, "explain")
    manifest = storage.read_json(f"explanations/{run}/_manifest.json")
    storage.check_writable()
    return ScorePlan(config, storage, run, manifest, method, scorers)


def fit_scorers(value: str, llm: LLMBackend) -> tuple[tuple[str, ...], str]:
    """`--scorers` against the simulator actually built, and why: `auto` leaves out the Yes/No
    scorers when it cannot read a one-token answer's probabilities (an API without logprobs);
    naming one then is an error."""
    names = choose_scorers(value, True) if value.strip() == "auto" else parse_names(value, tuple(SCORERS))
    wants_choices = [name for name in READS_CHOICES if name in names]
    if not wants_choices:
        return names, f"scorers {', '.join(names)} ({value.strip()}): simulator {llm.id}"
    if llm.can_read_choices:
        return names, f"scorers {', '.join(names)} ({value.strip()}): {llm.id}: {llm.abilities}"
    if value.strip() != "auto":
        raise InputError(f"--scorers {','.join(wants_choices)}: {llm.id}: {llm.abilities}")
    kept = tuple(name for name in names if name not in READS_CHOICES)
    note = f"scorers {', '.join(kept)} (auto, without {', '.join(wants_choices)}): {llm.id}: {llm.abilities}"
    return kept, note


def fit_to_simulator(plan: ScorePlan, llm: LLMBackend) -> ScorePlan:
    """The plan against the simulator actually built (see `fit_scorers`); a method that needs
    prompt probabilities it cannot read is an error."""
    from dataclasses import replace

    llm_scorers = [name for name in plan.scorers if name != "embedding"]
    if not llm_scorers and plan.config.scorers.strip() != "auto":
        return replace(plan, choice=f"scorers {', '.join(plan.scorers)}: no simulator needed")
    method, why = plan.method, "as asked"
    if "simulation" in plan.scorers or plan.config.scorers.strip() == "auto":
        if plan.method in ("line-by-line", "all-at-once") and not llm.can_read_digits:
            raise InputError(f"--method {plan.method}: {llm.id}: {llm.abilities}")
        if plan.config.method == "auto" and plan.method == "json" and llm.can_read_digits:
            method, why = "all-at-once", "auto: the simulator's prompt log-probabilities are readable"
        elif plan.config.method == "auto":
            why = "auto"
    scorers, note = fit_scorers(plan.config.scorers, llm)
    return replace(plan, scorers=scorers, method=method, choice=f"{note}; method {method} ({why})")


# -- validity ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidityPlan:
    config: ValidityConfig
    storage: Storage
    run: ActivationRun
    neurons: list[tuple[int, int]]
    formats: tuple[str, ...]
    scorers: tuple[str, ...]
    methods: tuple[str, ...]


def plan_validity(root: str, config: ValidityConfig, options: LLMOptions | None) -> ValidityPlan:
    formats = _choice(config.formats, "--formats", parse_names, FORMATS)
    local = parse_backend(config.simulator, "--simulator").kind == "local"
    scorers = _choice(config.scorers, "--scorers", choose_scorers, local)
    methods = _choice(config.methods, "--methods", parse_names, METHODS)
    if config.neurons < 2:
        raise InputError(f"--neurons {config.neurons}: the permutation null needs at least 2")
    _at_least(config.samples, "--samples", 1)
    _at_least(config.seed, "--seed", 0)
    if options is not None:
        check_backend(config.explainer, "--explainer", options)
        if set(scorers) - {"embedding"}:
            check_backend(config.simulator, "--simulator", options)
        check_batch(options, "local", (config.explainer, "--explainer"), (config.simulator, "--simulator"))
    storage = Storage.open(root)
    run = find_activation_run(storage, config.activations)
    spec = ",".join(map(str, spread_layers(run.layers, 3))) if config.layers == "auto" else config.layers
    layers = _choice(spec, "--layers", parse_layers, run.manifest["n_layers_in_model"])
    missing = [layer for layer in layers if layer not in run.layers]
    if missing:
        raise InputError(
            f"--layers {config.layers}: layer {missing[0]} was not extracted in {run.run_id} ({run.layers})"
        )
    if config.neurons > len(layers) * run.d_mlp:
        raise InputError(f"--neurons {config.neurons}: the chosen layers have {len(layers) * run.d_mlp}")
    picked = spread_neurons(layers, config.neurons, run.d_mlp, np.random.default_rng(config.seed))
    storage.check_writable()
    return ValidityPlan(config, storage, run, picked, formats, scorers, methods)


# -- the whole run -----------------------------------------------------------------------------


def check_atlas(root: str, config: AtlasConfig) -> IngestPlan:
    """What can be checked of a whole run before its first stage: the root, every stage's
    settings that need no earlier stage's output, both LLMs and the runner; the first stage's
    plan (each later stage is planned when the one before it has run)."""
    from neuronatlas.adapters.runners import check_runner

    check_runner(config.runner)
    check_batch(
        config.llm, config.runner, (config.explain.explainer, "--explainer"), (config.score.simulator, "--simulator")
    )
    single = config.llm.model_copy(update={"batch": False})  # each stage alone may be local
    check_extract(config.extract)
    check_score(config.score, single)
    check_explain(config.explain, single)
    return plan_ingest(root, config.ingest)
