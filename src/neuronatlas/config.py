"""Typed run configuration: one object per stage, whose fields (type, default, docstring) are the
single source of the command's options, the flows' parameters and the deployments' parameters.

A run is described by an `AtlasConfig` (a TOML file for `neuronatlas run --config`); the
resolved config is stored in `runs/<id>.json`, and `neuronatlas run --config runs/<id>.json`
runs it again. Only data here: checking a config against a root and its models is `plans.py`.
"""

import inspect
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from neuronatlas.errors import InputError

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_LLM = "local:qwen2.5-coder-1.5b"
F = TypeVar("F", bound=Callable[..., Any])
SCORERS_HELP = (
    "auto (simulation, embedding, and fuzzing with a local simulator), or any of simulation, "
    "embedding (span AUC), detection, fuzzing (Yes/No AUC)."
)


SECRET_PARAMETER = re.compile(r"key|token|secret|passw|pwd|auth|credential|^sig$", re.IGNORECASE)
"""Query parameters of a URL that carry a credential (`api_key`, `access_token`, `sig`...)."""


PROFILES = Path(__file__).parent / "profiles"
"""Named run configs shipped with the package (`--config large-atlas`)."""


def profiles() -> list[str]:
    return sorted(file.stem for file in PROFILES.glob("*.toml"))


class Config(BaseModel):
    """A stage's settings: frozen, no unknown fields, each field documented by its docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    options: ClassVar[dict[str, str]] = {}
    """Field -> its command-line option where that is not `--field-name` (e.g. `--llm-device`)."""

    @classmethod
    def option(cls, name: str) -> str:
        return cls.options.get(name, "--" + name.replace("_", "-"))

    @classmethod
    def of(cls, values: dict[str, Any], where: str = "parameters") -> Self:
        """Validate `values`; a wrong name or type is an `InputError` naming it."""
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg'].lower()}" for e in error.errors()
            )
            raise InputError(f"{where}: {problems}") from None


class IngestConfig(Config):
    source: str = "wiki-vital-en"
    """wiki-vital-en, a .txt/.jsonl/.parquet file or folder, or a Hugging Face dataset folder (save_to_disk)."""
    tokenizer_of: str = DEFAULT_MODEL
    """Subject model whose tokenizer cuts the windows."""
    window: int = 64
    """Tokens per window (excerpt)."""
    text_field: str = "text"
    """JSONL field / Parquet or dataset column holding the text."""
    id_field: str | None = None
    """Field or column naming each document."""
    split: str | None = None
    """Split of a saved DatasetDict (default: train)."""
    encoding_errors: str = "strict"
    """strict: reject undecodable bytes; replace: use U+FFFD."""


class ExtractConfig(Config):
    model: str = DEFAULT_MODEL
    """Shipped model (smollm2-135m, gemma3-270m) or model folder."""
    corpus: str | None = None
    """Corpus id (default: the only corpus under the root)."""
    layers: str = "all"
    """all, 5, 0,5 or 3-7."""
    top_k: int = 20
    """Top (and bottom) excerpts kept per neuron."""
    random_k: int = 15
    """Random excerpts kept per neuron."""
    seed: int = 0
    """Seed of the random sample."""
    device: str = "auto"
    """auto, cpu or cuda."""
    dtype: str = "auto"
    """auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16."""
    batch_size: int = 32
    """Excerpts per forward pass."""
    layers_per_shard: int = 0
    """Layers per pass over the corpus (0: all in one)."""
    limit: int | None = None
    """Use only this many excerpts (in sequence_id order; 0 or none: the whole corpus)."""

    @field_validator("limit")
    @classmethod
    def _zero_is_whole_corpus(cls, limit: int | None) -> int | None:
        return None if limit == 0 else limit


class ExplainConfig(Config):
    activations: str | None = None
    """Activation run id (default: the only one)."""
    layers: str = "all"
    """all, 5, 0,5 or 3-7 (among the extracted layers)."""
    neurons: str = "24"
    """A count (seeded sample), all, or a list like 5:12,6:40."""
    explainer: str = DEFAULT_LLM
    """local:<model> or openai:<model>."""
    samples: int = 3
    """Explanations sampled per neuron."""
    prompt_format: str = "tokens"
    """tokens (strongest tokens listed, then marked excerpts), pairs (the paper's), highlight."""
    temperature: float = 1.0
    """Sampling temperature."""
    max_tokens: int = 60
    """Longest answer, in tokens."""
    scale: int = 9
    """Activations shown as 0..scale (9 for local models)."""
    seed: int = 0
    """Seed of the neuron sample and the sampling."""
    sign: str = "positive"
    """positive (top records), or negative (bottom records, activations negated)."""


class ScoreConfig(Config):
    explanations: str | None = None
    """Explanation run id (default: the only one)."""
    simulator: str = DEFAULT_LLM
    """local:<model> or openai:<model>."""
    method: str = "auto"
    """auto, line-by-line or all-at-once (local: digit probabilities), or json."""
    scale: int = 9
    """Simulated activations on 0..scale."""
    placeholder: str = "unknown"
    """All-at-once: what stands for the unknown activation."""
    seed: int = 0
    """Seed of the permutation control."""
    scorers: str = Field(default="auto", description=SCORERS_HELP)
    splits: str = "calibration,valid,test"
    """Splits the simulation scorer simulates: all three, or valid alone (the headline score and its
    null, at a third of the tokens; the calibrated and test scores are then null)."""


class LLMOptions(Config):
    """Settings of the LLM backends a stage builds."""

    options: ClassVar[dict[str, str]] = {
        "device": "--llm-device",
        "dtype": "--llm-dtype",
        "usd_per_million_prompt": "--usd-per-m-in",
        "usd_per_million_completion": "--usd-per-m-out",
        "batch": "--batch-api",
        "poll_s": "--poll-seconds",
        "max_wait_s": "--max-wait-seconds",
        "batch_size": "--llm-batch-size",
        "tokenizer": "--llm-tokenizer",
    }
    base_url: str | None = None
    """OpenAI-compatible server for openai: backends (no credentials in it: the key goes in OPENAI_API_KEY)."""
    concurrency: int = 8
    """Concurrent requests (openai: backends)."""
    max_retries: int = 5
    """Retries of a failed request (openai: backends)."""
    timeout_s: float = 60.0
    """Seconds before a request times out (openai: backends)."""
    budget_tokens: int | None = None
    """Hard limit on LLM tokens (openai: backends)."""
    tokenizer: str | None = None
    """Shipped model or folder whose tokenizer bounds openai: prompts for the budget (default: UTF-8 bytes)."""
    budget_usd: float | None = None
    """Hard limit in dollars (with --usd-per-m-in/out)."""
    usd_per_million_prompt: float = 0.0
    """Dollars per million prompt tokens."""
    usd_per_million_completion: float = 0.0
    """Dollars per million completion tokens."""
    batch: bool = False
    """Use the OpenAI Batch API (openai: backends)."""
    poll_s: float = 30.0
    """Batch API: seconds between polls."""
    max_wait_s: float | None = None
    """Batch API: stop waiting after this; a rerun resumes."""
    device: str = "auto"
    """auto, cpu or cuda (local: backends)."""
    dtype: str = "bf16"
    """bf16 or fp32 (local: backends)."""
    batch_size: int = 8
    """Excerpts per forward pass (local: backends)."""

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, url: str | None) -> str | None:
        """A user, password or key in the URL would be recorded (manifests, the table, the site,
        Prefect): refused, without echoing it."""
        if url is None:
            return url
        parts = urlsplit(url)
        if "@" in parts.netloc or any(SECRET_PARAMETER.search(name) for name, _ in parse_qsl(parts.query)):
            raise InputError(
                "--base-url: credentials in the URL are not accepted (they would be recorded); put the key in "
                "OPENAI_API_KEY"
            )
        return url

    def after(self, spent: dict[str, Any]) -> "LLMOptions":
        """These options with the budgets less what an earlier stage `spent` (its usage manifest:
        prompt_tokens, completion_tokens, cost_usd), so that one budget holds for a whole run."""
        tokens, usd = self.budget_tokens, self.budget_usd
        if tokens is not None:
            tokens = max(0, tokens - int(spent.get("prompt_tokens", 0)) - int(spent.get("completion_tokens", 0)))
        if usd is not None:
            usd = max(0.0, usd - float(spent.get("cost_usd", 0.0)))
        return self.model_copy(update={"budget_tokens": tokens, "budget_usd": usd})


class ValidityConfig(Config):
    activations: str | None = None
    """Activation run id (default: the only one)."""
    layers: str = "auto"
    """auto (3 spread over the extracted), or like 5,15,25."""
    neurons: int = 24
    """Neurons, shared evenly among the layers."""
    formats: str = "tokens"
    """Explainer prompt formats to compare: tokens,pairs,highlight."""
    samples: int = 2
    """Explanations per neuron."""
    scorers: str = Field(default="auto", description=SCORERS_HELP)
    methods: str = "auto"
    """Simulation methods to compare: auto, line-by-line, all-at-once, json."""
    explainer: str = DEFAULT_LLM
    """local:<model> or openai:<model>."""
    simulator: str = DEFAULT_LLM
    """local:<model> or openai:<model>."""
    seed: int = 0
    """Seed of the neuron sample, the sampling and the null."""
    oracles: bool = True
    """Also score the oracle neurons."""


class AtlasConfig(Config):
    """The end-to-end run: every stage's settings. In a TOML file, one table per stage
    (`[ingest]`, `[extract]`, `[explain]`, `[score]`, `[llm]`) and `publish`, `runner` at the top."""

    ingest: IngestConfig = IngestConfig()
    extract: ExtractConfig = ExtractConfig(limit=2048)
    """The default run extracts from 2,048 excerpts: all 30 layers of SmolLM2-135M in about 4
    minutes on 2 CPU cores."""
    explain: ExplainConfig = ExplainConfig(neurons="2", samples=1)
    """The default run explains and scores 2 neurons: the whole run fits in 15 minutes on 2 cores."""
    score: ScoreConfig = ScoreConfig()
    llm: LLMOptions = LLMOptions()
    publish: bool = True
    """Publish the scores as a new version of published/atlas (false: stop after scoring)."""
    runner: str = "local"
    """local, or dask[:ADDRESS]: shards and neuron batches on a Dask cluster."""

    @model_validator(mode="before")
    @classmethod
    def _over_the_defaults(cls, values: Any) -> Any:
        """A stage table given in part keeps the run's defaults for the rest (a `[explain]` table
        with only `samples` still explains 2 neurons); the corpus is cut with the subject model's
        tokenizer unless `[ingest] tokenizer_of` says otherwise."""
        if not isinstance(values, dict):
            return values
        merged = dict(values)
        for stage in (*STAGES, "llm"):
            given = merged.get(stage)
            if isinstance(given, dict):
                default = cls.model_fields[stage].default
                merged[stage] = {**default.model_dump(), **given}
        extract, ingest = values.get("extract"), values.get("ingest")
        if (
            isinstance(extract, dict)
            and "model" in extract
            and not (isinstance(ingest, dict) and "tokenizer_of" in ingest)
        ):
            merged["ingest"] = {**AtlasConfig.model_fields["ingest"].default.model_dump(), **(ingest or {})}
            merged["ingest"]["tokenizer_of"] = extract["model"]
        return merged

    @classmethod
    def load(cls, path: str) -> "AtlasConfig":
        """A TOML config, a run profile's name (`PROFILES`), or the `config` of a run record
        (`runs/<id>.json`)."""
        file = Path(path).expanduser()
        if not file.is_file() and path in profiles():
            file = PROFILES / f"{path}.toml"
        if not file.is_file():
            raise InputError(f"--config {path}: no such file (nor a profile: {', '.join(profiles())})")
        try:
            text = file.read_text(encoding="utf-8")
            values = json.loads(text).get("config") if file.suffix == ".json" else tomllib.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError, AttributeError) as error:
            raise InputError(f"--config {path}: not a TOML config or a run record ({error})") from None
        if not isinstance(values, dict):
            raise InputError(f"--config {path}: a run record without its config")
        return cls.of(values, f"--config {path}")


# -- the flat parameters of the atlas flow and the `run` command -----------------------------

CHAINED = {("extract", "corpus"), ("explain", "activations"), ("score", "explanations"), ("ingest", "tokenizer_of")}
"""Inputs the atlas fills in itself from the stage before (the tokenizer is the subject model's)."""
RENAMED = {("extract", "layers"): "extract_layers", ("publish", None): "publish_table"}
"""Flat names where the field name alone would be ambiguous."""
STAGES = ("ingest", "extract", "explain", "score")


def flat_fields() -> dict[str, list[tuple[str, str]]]:
    """Flat parameter name -> the (stage, field) pairs it sets. A name in several stages (seed,
    scale) sets all of them: the atlas uses one seed and one activation scale throughout."""
    flat: dict[str, list[tuple[str, str]]] = {}
    for stage in STAGES:
        model: type[Config] = AtlasConfig.model_fields[stage].annotation  # type: ignore[assignment]
        for name in model.model_fields:
            if (stage, name) not in CHAINED:
                flat.setdefault(RENAMED.get((stage, name), name), []).append((stage, name))
    return flat


def atlas_from_flat(values: dict[str, Any]) -> AtlasConfig:
    """An `AtlasConfig` from the atlas flow's flat parameters (the stage defaults of `AtlasConfig`
    where a value is not given); `options` is the `llm` table, `publish_table` and `runner` as named."""
    base = AtlasConfig()
    nested: dict[str, dict[str, Any]] = {stage: getattr(base, stage).model_dump() for stage in STAGES}
    fields = flat_fields()
    unknown = sorted(set(values) - set(fields) - {"options", "publish_table", "runner"})
    if unknown:
        raise InputError(f"atlas: unknown parameter {unknown[0]}")
    for name, value in values.items():
        for stage, field in fields.get(name, []):
            nested[stage][field] = value
    if "model" in values:  # the corpus is cut with the subject model's tokenizer
        nested["ingest"]["tokenizer_of"] = values["model"]
    options = values.get("options")
    llm = options.model_dump() if isinstance(options, LLMOptions) else dict(options or {})
    top = {"publish": values.get("publish_table", base.publish), "runner": values.get("runner", base.runner)}
    return AtlasConfig.of({**nested, "llm": llm, **top})


def atlas_flat(config: AtlasConfig) -> dict[str, Any]:
    """A config as the atlas flow's flat parameters (without `options`)."""
    flat = {name: getattr(getattr(config, pairs[0][0]), pairs[0][1]) for name, pairs in flat_fields().items()}
    return {**flat, "publish_table": config.publish, "runner": config.runner}


def atlas_flat_defaults() -> dict[str, Any]:
    """The flat parameters with `AtlasConfig`'s defaults."""
    return atlas_flat(AtlasConfig())


def overlay(config: AtlasConfig, changes: dict[str, Any], options: dict[str, Any] | None = None) -> AtlasConfig:
    """`config` with some flat parameters (and LLM options) changed. Refused where the flat view
    would lose something: a config whose stages use different seeds or scales."""
    if not changes and not options:
        return config
    if atlas_from_flat({**atlas_flat(config), "options": config.llm}) != config:
        raise InputError("a config whose stages use different seeds or scales cannot take options beside it")
    llm = {**config.llm.model_dump(), **(options or {})}
    return atlas_from_flat({**atlas_flat(config), **changes, "options": llm})


def parameters(config: type[Config], base: Config | None = None) -> list[inspect.Parameter]:
    """A config's fields as keyword parameters (annotation and default; `base` overrides the
    defaults), for the signature of a flow that takes them one by one."""
    base = base or config()
    return [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=getattr(base, name), annotation=field.annotation
        )
        for name, field in config.model_fields.items()
    ]


def with_signature(*groups: list[inspect.Parameter]) -> Callable[[F], F]:
    """Give a function taking `**parameters` the explicit signature `groups` spell out, so that
    Prefect (its parameter schema, the UI, deployments) and callers see every parameter."""

    def decorate(function: F) -> F:
        own = [p for p in inspect.signature(function).parameters.values() if p.kind != p.VAR_KEYWORD]
        merged = {p.name: p for p in own}
        for group in groups:
            merged.update({p.name: p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in group})
        ordered = sorted(merged.values(), key=lambda p: p.kind)
        returns = inspect.signature(function).return_annotation
        function.__signature__ = inspect.Signature(ordered, return_annotation=returns)  # type: ignore[attr-defined]
        return function

    return decorate


def atlas_parameters() -> list[inspect.Parameter]:
    """The atlas flow's flat parameters, with `AtlasConfig`'s defaults."""
    defaults = atlas_flat_defaults()
    annotations: dict[str, Any] = {"publish_table": bool, "runner": str}
    for name, pairs in flat_fields().items():
        stage, field = pairs[0]
        model: type[Config] = AtlasConfig.model_fields[stage].annotation  # type: ignore[assignment]
        annotations[name] = model.model_fields[field].annotation
    return [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name], annotation=annotations[name])
        for name in defaults
    ]
