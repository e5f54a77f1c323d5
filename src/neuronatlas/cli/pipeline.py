"""The commands that run the pipeline: one per stage, `validity`, and `run` (the whole atlas).

Their options are the fields of the stage configs (`neuronatlas.config`); each command checks
its config once, into a plan (bad input fails here, in one line, before Prefect starts), and
hands the plan to the flow.
"""

from typing import Annotated, Any

import typer

from neuronatlas.cli.app import app, flows, print_gaps, print_run
from neuronatlas.cli.options import CONTEXT, ROOT, command, given, option, options_of, split
from neuronatlas.config import (
    AtlasConfig,
    ExplainConfig,
    ExtractConfig,
    IngestConfig,
    LLMOptions,
    ScoreConfig,
    ValidityConfig,
    atlas_flat_defaults,
    atlas_from_flat,
    atlas_parameters,
    overlay,
)
from neuronatlas.runtime import configure_environment


def _ingest(root: str, **values: Any) -> str:
    from neuronatlas.plans import plan_ingest

    configure_environment()
    plan = plan_ingest(root, IngestConfig(**values))
    result = flows().ingest.ingest_corpus(root=root, plan=plan)
    verb = "ingested" if result.created else "already ingested (nothing written)"
    typer.echo(f"{verb}: {result.corpus_id}: {result.rows:,} windows, {result.tokens:,} tokens at {result.uri}")
    return str(result.corpus_id)


def _extract(root: str, **values: Any) -> str:
    from neuronatlas.plans import plan_extract

    configure_environment()
    plan = plan_extract(root, ExtractConfig(**values))
    result = flows().extract.extract_activations(root=root, plan=plan)
    done = "extracted" if result.layers_extracted else "already extracted (nothing written)"
    layers = result.layers
    listed = ",".join(map(str, layers)) if len(layers) <= 6 else f"{layers[0]}-{layers[-1]} ({len(layers)} layers)"
    typer.echo(f"{done}: run {result.run_id}, layers {listed}")
    typer.echo(f"  records: {result.records_uri}\n  stats:   {result.stats_uri}\n  picture: {result.plot_uri}")
    return str(result.run_id)


def _explain(root: str, **values: Any) -> str:
    from neuronatlas.plans import plan_explain

    configure_environment()
    settings, llm = split(values, ExplainConfig, LLMOptions)
    config, options = ExplainConfig(**settings), LLMOptions(**llm)
    plan = plan_explain(root, config, options)
    result = flows().explain.explain_neurons(root=root, options=options, plan=plan)
    side = " of the negative side" if config.sign == "negative" else ""
    typer.echo(
        f"explanations{side}: run {result.run_id}: {result.explained} explained, {result.failed} failed, "
        f"{result.llm_calls} LLM calls\n  {result.uri}"
    )
    return str(result.run_id)


def _score(root: str, **values: Any) -> None:
    from neuronatlas.plans import plan_score

    configure_environment()
    settings, llm = split(values, ScoreConfig, LLMOptions)
    options = LLMOptions(**llm)
    plan = plan_score(root, ScoreConfig(**settings), options)
    result = flows().score.simulate_and_score(root=root, options=options, plan=plan)
    figures = result.summary
    typer.echo(
        f"scores: run {result.run_id}: {figures['scored']} of {figures['explanations']} explanations scored by "
        f"simulation, {figures['neurons']} neurons; each scorer against its permutation null (per neuron, "
        "bootstrap 95% CI):"
    )
    print_gaps(figures)
    typer.echo(
        f"  simulation: digit mass {figures['mean_digit_mass']}, explanation sensitivity "
        f"{figures['explanation_sensitivity']} (1.0: ignores the explanation)"
    )
    typer.echo(f"  {result.scores_uri}\n  picture: {result.plot_uri}")


def _validity(root: str, **values: Any) -> None:
    from neuronatlas.plans import plan_validity

    configure_environment()
    settings, llm = split(values, ValidityConfig, LLMOptions)
    options = LLMOptions(**llm)
    plan = plan_validity(root, ValidityConfig(**settings), options)
    result = flows().validity.validity(root=root, options=options, plan=plan)
    typer.echo(result.report)
    typer.echo(f"report: {result.report_uri}\npicture: {result.plot_uri}")


LLM = options_of(LLMOptions)
command(
    app,
    "ingest",
    [ROOT, *options_of(IngestConfig)],
    _ingest,
    "Tokenise a corpus source into fixed windows and commit it as a validated dataset.",
)
command(
    app,
    "extract",
    [ROOT, *options_of(ExtractConfig)],
    _extract,
    "Record every MLP neuron's top, bottom and random excerpts and statistics, layer by layer.",
)
command(
    app,
    "explain",
    [ROOT, *options_of(ExplainConfig), *LLM],
    _explain,
    "Explain a selection of neurons from their top activation records.",
)
command(
    app,
    "score",
    [ROOT, *options_of(ScoreConfig), *LLM],
    _score,
    "Score every explanation of a run on held-out records (simulation, embedding, detection, fuzzing, and the "
    "token-lookup baseline), each against a permutation control.",
)
command(
    app,
    "validity",
    [ROOT, *options_of(ValidityConfig), *LLM],
    _validity,
    "Measure whether the scores mean anything: every scorer against its permutation null over a spread of "
    "neurons, with the token-lookup baseline and oracle neurons; writes a report.",
)


# -- the whole atlas ---------------------------------------------------------------------------

RUN_HELP = {
    "seed": "Seed of every stage: the excerpt sample, the neuron sample, the sampling, the permutation control.",
    "scale": "Activations shown to the explainer and simulated on 0..scale.",
    "model": "Subject model: shipped name or model folder (its tokenizer cuts the corpus).",
    "layers": "Layers to pick the explained neurons from.",
    "extract_layers": "Layers to extract (all, 5, 0,5 or 3-7).",
    "limit": "Excerpts to extract from (0: the whole corpus).",
    "publish_table": "Publish the scores as a new version of published/atlas (--no-publish: stop after scoring).",
}


def _run_options() -> list[Any]:
    flat = []
    for parameter in atlas_parameters():
        flag = "--publish/--no-publish" if parameter.name == "publish_table" else None
        annotation = parameter.annotation
        help_text = RUN_HELP.get(parameter.name) or _field_help(parameter.name)
        flat.append(option(parameter.name, annotation, parameter.default, help_text, flag))
    config = option("config", str | None, None, "A TOML config (see docs/atlas.md) or a run record runs/<id>.json.")
    return [CONTEXT, ROOT, config, *flat, *LLM]


def _field_help(name: str) -> str | None:
    """A flat parameter's help: its stage field's docstring (`runner`: the atlas's own)."""
    from neuronatlas.config import flat_fields

    pairs = flat_fields().get(name)
    if not pairs:
        return AtlasConfig.model_fields[name].description
    stage, field = pairs[0]
    return AtlasConfig.model_fields[stage].annotation.model_fields[field].description  # type: ignore[union-attr]


def _run(ctx: typer.Context, root: str, config: str | None, **values: Any) -> None:
    from neuronatlas.plans import check_atlas

    configure_environment()
    resolved = _atlas_config(ctx, config, values)
    plan = check_atlas(root, resolved)
    explain, score, extract = resolved.explain, resolved.score, resolved.extract
    excerpts = "the whole corpus" if extract.limit is None else f"{extract.limit:,} excerpts"
    typer.echo(
        f"neuronatlas run: ingest {resolved.ingest.source}, extract every layer of {extract.model} ({excerpts}), "
        f"explain and score {explain.neurons} neurons ({explain.samples} explanation each) with "
        f"{explain.explainer} / {score.simulator}, "
        + ("publish to published/atlas." if resolved.publish else "no publish.")
    )
    result = flows().atlas.atlas(root=root, config=resolved, plan=plan)
    from neuronatlas import catalog

    [report] = [r for r in catalog.runs(root) if r["run_id"] == result.run_id]
    print_run(report)
    if result.table_uri:
        typer.echo(f"table:   {result.table_uri} (version {result.version}); `neuronatlas export OUT.parquet`")
    for plot in result.plots:
        typer.echo(f"plot:    {plot}")
    typer.echo(f"docs:    {result.data_docs}")
    typer.echo(f"report:  {result.report_uri}")
    if result.table_uri:
        typer.echo(f"browse:  neuronatlas view --root {root} --out site   (or `neuronatlas show LAYER:NEURON`)")


def _atlas_config(ctx: typer.Context, path: str | None, values: dict[str, Any]) -> AtlasConfig:
    """The run's config: the options alone, or the file with the options typed on the command
    line laid over it."""
    flat_names = atlas_flat_defaults()
    if path is None:
        flat = {name: value for name, value in values.items() if name in flat_names}
        return atlas_from_flat({**flat, "options": split(values, LLMOptions)[0]})
    typed = given(ctx, values)
    changes = {name: value for name, value in typed.items() if name in flat_names}
    return overlay(AtlasConfig.load(path), changes, split(typed, LLMOptions)[0])


command(
    app,
    "run",
    _run_options(),
    _run,
    "The `atlas` flow: ingestion, extraction of every layer, explanation and scoring of a seeded sample of "
    "neurons, then a new version of the published table; each stage skips work already done. Options, or "
    "--config FILE (a TOML config, or runs/<id>.json to run a recorded run again; options typed beside it "
    "override the file).",
)


def _deploy(
    ctx: typer.Context, root: str, pool: str, config: str | None, neurons: str | None, runner: str | None, **values: Any
) -> None:
    configure_environment()
    from neuronatlas.flows.deploy import deploy as create
    from neuronatlas.plans import check_atlas

    loaded = AtlasConfig.load(config) if config else AtlasConfig()
    changes = {"neurons": neurons} if neurons else {}
    llm = loaded.llm.model_copy(update=split(given(ctx, values), LLMOptions)[0])  # typed options over the file's
    resolved = loaded.model_copy(
        update={
            "explain": loaded.explain.model_copy(update=changes),
            "llm": LLMOptions.model_validate(llm.model_dump()),
            **({"runner": runner} if runner else {}),
        }
    )
    check_atlas(root, resolved)
    names = create(root, pool, resolved)
    typer.echo(f"deployments on {pool}: {', '.join(names)}")
    typer.echo(f"run now:   prefect deployment run {names[-1]}")
    typer.echo(f"worker:    prefect worker start --pool {pool}")


command(
    app,
    "deploy",
    [
        CONTEXT,
        ROOT,
        option("pool", str, "neuronatlas", "Prefect process work pool (created if missing)."),
        option("config", str | None, None, "A TOML config the runs use (default: the default run)."),
        option("neurons", str | None, None, "Neurons each run explains and scores."),
        option("runner", str | None, None, "local, or dask:ADDRESS for the runs."),
        *LLM,
    ],
    _deploy,
    "Create the atlas deployments on a Prefect server (PREFECT_API_URL): nightly at 02:00 UTC and on demand, "
    "both running the same config, with the LLM options (budget, price, concurrency, retries, Batch API) given "
    "here laid over the file's [llm] table. Start a worker to run them: `prefect worker start --pool neuronatlas`.",
)


@app.command("prepare-model")
def prepare_model(
    model: Annotated[str, typer.Argument(help="Shipped model name or model folder.")] = "smollm2-135m",
) -> None:
    """Load a subject model offline once, caching GGUF weights as safetensors."""
    configure_environment()
    from neuronatlas.adapters.models import cached_folder, load_model, resolve_model

    source = resolve_model(model)
    loaded = load_model(source)
    where = cached_folder(source) if source.gguf_file else source.folder
    parameters = sum(p.numel() for p in loaded.parameters())
    typer.echo(f"{model}: {parameters:,} parameters, {loaded.config.num_hidden_layers} layers, at {where}")
