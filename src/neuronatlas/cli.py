"""The `neuronatlas` command."""

import sys
from typing import Annotated, Any

import typer

from neuronatlas.defaults import SCORERS
from neuronatlas.errors import AtlasError, InputError
from neuronatlas.runtime import configure_environment, quiet_user_errors

app = typer.Typer(
    name="neuronatlas",
    help="Explain the neurons of a language model with another one, as a versioned data product.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

SCORERS_HELP = (
    "auto (simulation, embedding, and fuzzing with a local simulator), or any of simulation, "
    "embedding (span AUC), detection, fuzzing (Yes/No AUC)."
)
Root = Annotated[
    str,
    typer.Option(envvar="NEURONATLAS_ROOT", help="Storage root: a local folder or s3://bucket/prefix."),
]


def _flows() -> Any:
    """Import Prefect (and the flows) only once the environment is set up."""
    configure_environment()
    import neuronatlas.flows.atlas
    import neuronatlas.flows.explain
    import neuronatlas.flows.extract
    import neuronatlas.flows.ingest
    import neuronatlas.flows.publish
    import neuronatlas.flows.score
    import neuronatlas.flows.validity

    quiet_user_errors()
    return neuronatlas.flows


@app.command()
def ingest(
    root: Root = "./atlas",
    source: Annotated[
        str,
        typer.Option(
            help="wiki-vital-en, a .txt/.jsonl/.parquet file or folder, "
            "or a Hugging Face dataset folder (save_to_disk)."
        ),
    ] = "wiki-vital-en",
    tokenizer_of: Annotated[str, typer.Option(help="Subject model whose tokenizer cuts the windows.")] = "smollm2-135m",
    window: Annotated[int, typer.Option(help="Tokens per window (excerpt).")] = 64,
    text_field: Annotated[str, typer.Option(help="JSONL field / Parquet or dataset column holding the text.")] = "text",
    id_field: Annotated[str | None, typer.Option(help="Field or column naming each document.")] = None,
    split: Annotated[str | None, typer.Option(help="Split of a saved DatasetDict (default: train).")] = None,
    encoding_errors: Annotated[
        str, typer.Option(help="strict: reject undecodable bytes; replace: use U+FFFD.")
    ] = "strict",
) -> str:
    """Tokenise a corpus source into fixed windows and commit it as a validated dataset."""
    configure_environment()
    from neuronatlas.adapters.sources import SourceSpec
    from neuronatlas.flows.ingest import check_ingest_inputs

    spec = SourceSpec(source, text_field, id_field, split, encoding_errors)  # type: ignore[arg-type]
    check_ingest_inputs(spec, root, tokenizer_of, window)
    result = _flows().ingest.ingest_corpus(
        source=source,
        root=root,
        tokenizer_of=tokenizer_of,
        window=window,
        text_field=text_field,
        id_field=id_field,
        split=split,
        encoding_errors=encoding_errors,
    )
    verb = "ingested" if result.created else "already ingested (nothing written)"
    typer.echo(f"{verb}: {result.corpus_id}: {result.rows:,} windows, {result.tokens:,} tokens at {result.uri}")
    return str(result.corpus_id)


@app.command()
def extract(
    root: Root = "./atlas",
    model: Annotated[
        str, typer.Option(help="Shipped model (smollm2-135m, gemma3-270m) or model folder.")
    ] = "smollm2-135m",
    corpus: Annotated[str | None, typer.Option(help="Corpus id (default: the only corpus under the root).")] = None,
    layers: Annotated[str, typer.Option(help="all, 5, 0,5 or 3-7.")] = "all",
    top_k: Annotated[int, typer.Option(help="Top (and bottom) excerpts kept per neuron.")] = 20,
    random_k: Annotated[int, typer.Option(help="Random excerpts kept per neuron.")] = 15,
    seed: Annotated[int, typer.Option(help="Seed of the random sample.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Excerpts per forward pass.")] = 32,
    layers_per_shard: Annotated[int, typer.Option(help="Layers per pass over the corpus (0: all in one).")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use only this many excerpts (in sequence_id order).")] = None,
) -> str:
    """Record every MLP neuron's top, bottom and random excerpts and statistics, layer by layer."""
    configure_environment()
    from neuronatlas.flows.extract import check_extract_inputs

    check_extract_inputs(root, model, corpus, layers, top_k, random_k, limit, device, dtype)
    result = _flows().extract.extract_activations(
        root=root,
        model=model,
        corpus=corpus,
        layers=layers,
        top_k=top_k,
        random_k=random_k,
        seed=seed,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        layers_per_shard=layers_per_shard,
        limit=limit,
    )
    done = "extracted" if result.layers_extracted else "already extracted (nothing written)"
    typer.echo(f"{done}: run {result.run_id}, layers {_layer_list(result.layers)}")
    typer.echo(f"  records: {result.records_uri}\n  stats:   {result.stats_uri}\n  picture: {result.plot_uri}")
    return str(result.run_id)


def _layer_list(layers: list[int]) -> str:
    return ",".join(map(str, layers)) if len(layers) <= 6 else f"{layers[0]}-{layers[-1]} ({len(layers)} layers)"


# -- LLM stages ---------------------------------------------------------------------------------

BaseUrl = Annotated[str | None, typer.Option(help="OpenAI-compatible server for openai: backends.")]
Concurrency = Annotated[int, typer.Option(help="Concurrent requests (openai: backends).")]
BudgetTokens = Annotated[int | None, typer.Option(help="Hard limit on LLM tokens (openai: backends).")]
BudgetUsd = Annotated[float | None, typer.Option(help="Hard limit in dollars (with --usd-per-m-in/out).")]
PriceIn = Annotated[float, typer.Option("--usd-per-m-in", help="Dollars per million prompt tokens.")]
PriceOut = Annotated[float, typer.Option("--usd-per-m-out", help="Dollars per million completion tokens.")]
LlmDevice = Annotated[str, typer.Option("--llm-device", help="auto, cpu or cuda (local: backends).")]
LlmDtype = Annotated[str, typer.Option("--llm-dtype", help="bf16 or fp32 (local: backends).")]
BatchApi = Annotated[bool, typer.Option("--batch-api", help="Use the OpenAI Batch API (openai: backends).")]
PollSeconds = Annotated[float, typer.Option(help="Batch API: seconds between polls.")]
MaxWait = Annotated[float | None, typer.Option(help="Batch API: stop waiting after this; a rerun resumes.")]


def _options(**values: Any) -> Any:
    """The backends' settings from the command's LLM options."""
    from neuronatlas.adapters.llm import BackendOptions

    return BackendOptions(**values)


@app.command()
def explain(
    root: Root = "./atlas",
    activations: Annotated[str | None, typer.Option(help="Activation run id (default: the only one).")] = None,
    layers: Annotated[str, typer.Option(help="all, 5, 0,5 or 3-7 (among the extracted layers).")] = "all",
    neurons: Annotated[str, typer.Option(help="A count (seeded sample) or a list like 5:12,6:40.")] = "24",
    explainer: Annotated[str, typer.Option(help="local:<model> or openai:<model>.")] = "local:qwen2.5-coder-1.5b",
    samples: Annotated[int, typer.Option(help="Explanations sampled per neuron.")] = 3,
    prompt_format: Annotated[
        str,
        typer.Option(help="tokens (strongest tokens listed, then marked excerpts), pairs (the paper's), highlight."),
    ] = "tokens",
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 60,
    scale: Annotated[int, typer.Option(help="Activations shown as 0..scale (9 for local models).")] = 9,
    seed: Annotated[int, typer.Option(help="Seed of the neuron sample and the sampling.")] = 0,
    sign: Annotated[
        str, typer.Option(help="positive (top records), or negative (bottom records, activations negated).")
    ] = "positive",
    base_url: BaseUrl = None,
    concurrency: Concurrency = 8,
    budget_tokens: BudgetTokens = None,
    budget_usd: BudgetUsd = None,
    usd_per_m_in: PriceIn = 0.0,
    usd_per_m_out: PriceOut = 0.0,
    llm_device: LlmDevice = "auto",
    llm_dtype: LlmDtype = "bf16",
    batch_api: BatchApi = False,
    poll_seconds: PollSeconds = 30.0,
    max_wait_seconds: MaxWait = None,
) -> str:
    """Explain a selection of neurons from their top activation records."""
    configure_environment()
    from neuronatlas.flows.explain import check_explain_inputs

    options = _options(
        base_url=base_url,
        concurrency=concurrency,
        budget_tokens=budget_tokens,
        budget_usd=budget_usd,
        usd_per_million_prompt=usd_per_m_in,
        usd_per_million_completion=usd_per_m_out,
        device=llm_device,
        dtype=llm_dtype,
        batch=batch_api,
        poll_s=poll_seconds,
        max_wait_s=max_wait_seconds,
    )
    check_explain_inputs(
        root, activations, layers, neurons, explainer, samples, prompt_format, scale, seed, options, sign
    )
    result = _flows().explain.explain_neurons(
        root=root,
        activations=activations,
        layers=layers,
        neurons=neurons,
        explainer=explainer,
        samples=samples,
        prompt_format=prompt_format,
        temperature=temperature,
        max_tokens=max_tokens,
        scale=scale,
        seed=seed,
        sign=sign,
        options=options,
    )
    typer.echo(
        f"explanations{' of the negative side' if sign == 'negative' else ''}: run {result.run_id}: "
        f"{result.explained} explained, {result.failed} failed, "
        f"{result.llm_calls} LLM calls\n  {result.uri}"
    )
    return str(result.run_id)


@app.command()
def score(
    root: Root = "./atlas",
    explanations: Annotated[str | None, typer.Option(help="Explanation run id (default: the only one).")] = None,
    simulator: Annotated[str, typer.Option(help="local:<model> or openai:<model>.")] = "local:qwen2.5-coder-1.5b",
    method: Annotated[
        str, typer.Option(help="auto, line-by-line or all-at-once (local: digit probabilities), or json.")
    ] = "auto",
    scale: Annotated[int, typer.Option(help="Simulated activations on 0..scale.")] = 9,
    placeholder: Annotated[str, typer.Option(help="All-at-once: what stands for the unknown activation.")] = "unknown",
    seed: Annotated[int, typer.Option(help="Seed of the permutation control.")] = 0,
    scorers: Annotated[str, typer.Option(help=SCORERS_HELP)] = SCORERS,
    base_url: BaseUrl = None,
    concurrency: Concurrency = 8,
    budget_tokens: BudgetTokens = None,
    budget_usd: BudgetUsd = None,
    usd_per_m_in: PriceIn = 0.0,
    usd_per_m_out: PriceOut = 0.0,
    llm_device: LlmDevice = "auto",
    llm_dtype: LlmDtype = "bf16",
    batch_api: BatchApi = False,
    poll_seconds: PollSeconds = 30.0,
    max_wait_seconds: MaxWait = None,
) -> None:
    """Score every explanation of a run on held-out records (simulation and embedding scorers, and
    the token-lookup baseline), each against a permutation control."""
    configure_environment()
    from neuronatlas.flows.score import check_score_inputs

    options = _options(
        base_url=base_url,
        concurrency=concurrency,
        budget_tokens=budget_tokens,
        budget_usd=budget_usd,
        usd_per_million_prompt=usd_per_m_in,
        usd_per_million_completion=usd_per_m_out,
        device=llm_device,
        dtype=llm_dtype,
        batch=batch_api,
        poll_s=poll_seconds,
        max_wait_s=max_wait_seconds,
    )
    check_score_inputs(root, explanations, simulator, method, scale, options, scorers)
    result = _flows().score.simulate_and_score(
        root=root,
        explanations=explanations,
        simulator=simulator,
        method=method,
        scale=scale,
        placeholder=placeholder,
        seed=seed,
        scorers=scorers,
        options=options,
    )
    from neuronatlas.core.validity import MIN_GAP_NEURONS

    figures = result.summary
    typer.echo(
        f"scores: run {result.run_id}: {figures['scored']} of {figures['explanations']} explanations scored by "
        f"simulation, {figures['neurons']} neurons; each scorer against its permutation null (per neuron, "
        "bootstrap 95% CI):"
    )
    typer.echo(f"  {'scorer':<16} {'real':>7} {'null':>7} {'gap':>7}  95% CI            n  verdict")
    for name, gap in figures["scorers"].items():
        if gap is None:
            typer.echo(f"  {name:<16} no paired scores (not run, or no control partner)")
            continue
        verdict = "beats its null" if gap["significant"] else "NOT significant"
        if gap["n"] < MIN_GAP_NEURONS:
            verdict = "too few neurons to tell"
        interval = f"{gap['ci95'][0]:+.3f}..{gap['ci95'][1]:+.3f}"
        typer.echo(
            f"  {name:<16} {gap['real']:>7.3f} {gap['null']:>7.3f} {gap['gap']:>+7.3f}  {interval:<16} "
            f"{gap['n']:>3}  {verdict}"
        )
    typer.echo(
        f"  simulation: digit mass {figures['mean_digit_mass']}, explanation sensitivity "
        f"{figures['explanation_sensitivity']} (1.0: ignores the explanation)"
    )
    typer.echo(f"  {result.scores_uri}\n  picture: {result.plot_uri}")


@app.command()
def validity(
    root: Root = "./atlas",
    activations: Annotated[str | None, typer.Option(help="Activation run id (default: the only one).")] = None,
    layers: Annotated[str, typer.Option(help="auto (3 spread over the extracted), or like 5,15,25.")] = "auto",
    neurons: Annotated[int, typer.Option(help="Neurons, shared evenly among the layers.")] = 24,
    formats: Annotated[
        str, typer.Option(help="Explainer prompt formats to compare: tokens,pairs,highlight.")
    ] = "tokens",
    samples: Annotated[int, typer.Option(help="Explanations per neuron.")] = 2,
    scorers: Annotated[str, typer.Option(help=SCORERS_HELP)] = SCORERS,
    methods: Annotated[
        str, typer.Option(help="Simulation methods to compare: auto, line-by-line, all-at-once, json.")
    ] = "auto",
    explainer: Annotated[str, typer.Option(help="local:<model> or openai:<model>.")] = "local:qwen2.5-coder-1.5b",
    simulator: Annotated[str, typer.Option(help="local:<model> or openai:<model>.")] = "local:qwen2.5-coder-1.5b",
    seed: Annotated[int, typer.Option(help="Seed of the neuron sample, the sampling and the null.")] = 0,
    oracles: Annotated[bool, typer.Option(help="Also score the oracle neurons.")] = True,
    base_url: BaseUrl = None,
    concurrency: Concurrency = 8,
    llm_device: LlmDevice = "auto",
    llm_dtype: LlmDtype = "bf16",
) -> None:
    """Measure whether the scores mean anything: every scorer against its permutation null over a
    spread of neurons, with the token-lookup baseline and oracle neurons; writes a report."""
    configure_environment()
    from neuronatlas.flows.validity import check_validity_inputs

    options = _options(base_url=base_url, concurrency=concurrency, device=llm_device, dtype=llm_dtype)
    check_validity_inputs(
        root, activations, layers, neurons, formats, scorers, methods, seed, explainer, simulator, options
    )
    result = _flows().validity.validity(
        root=root,
        activations=activations,
        layers=layers,
        neurons=neurons,
        formats=formats,
        samples=samples,
        scorers=scorers,
        methods=methods,
        explainer=explainer,
        simulator=simulator,
        seed=seed,
        oracles=oracles,
        options=options,
    )
    typer.echo(result.report)
    typer.echo(f"report: {result.report_uri}\npicture: {result.plot_uri}")


@app.command()
def corpora(root: Root = "./atlas") -> None:
    """List the committed corpora under the root."""
    from neuronatlas.adapters.storage import Storage

    storage = Storage.open(root)
    names = [name for name in storage.list("corpus") if storage.is_committed(f"corpus/{name}")]
    if not names:
        typer.echo(f"no corpus under {storage.uri()}")
    for name in names:
        manifest = storage.manifest(f"corpus/{name}")
        typer.echo(
            f"{name}\t{manifest['rows']:,} windows\t{manifest['tokens']:,} tokens\t{manifest['source']['label']}"
        )


@app.command()
def run(
    root: Root = "./atlas",
    source: Annotated[str, typer.Option(help="Corpus source (see `ingest --source`).")] = "wiki-vital-en",
    model: Annotated[str, typer.Option(help="Subject model: shipped name or model folder.")] = "smollm2-135m",
    limit: Annotated[int, typer.Option(help="Excerpts to extract from (0: the whole corpus).")] = 2048,
    neurons: Annotated[str, typer.Option(help="Neurons to explain and score: a count or a list.")] = "2",
    layers: Annotated[str, typer.Option(help="Layers to pick neurons from.")] = "all",
    samples: Annotated[int, typer.Option(help="Explanations per neuron.")] = 1,
    explainer: Annotated[str, typer.Option(help="local:<model> or openai:<model>.")] = "local:qwen2.5-coder-1.5b",
    simulator: Annotated[str, typer.Option(help="local:<model> or openai:<model>.")] = "local:qwen2.5-coder-1.5b",
    scorers: Annotated[str, typer.Option(help=SCORERS_HELP)] = SCORERS,
    base_url: BaseUrl = None,
    no_publish: Annotated[bool, typer.Option("--no-publish", help="Stop after scoring.")] = False,
    runner: Annotated[
        str, typer.Option(help="local, or dask[:ADDRESS]: shards and neuron batches on a Dask cluster.")
    ] = "local",
) -> None:
    """The `atlas` flow on the embedded default: ingestion, extraction of every layer, explanation
    and scoring of a seeded sample of neurons, then a new version of the published table. Each
    stage skips work already done."""
    configure_environment()
    from neuronatlas.adapters.llm import check_backend
    from neuronatlas.flows.score import parse_scorers

    options = _options(base_url=base_url)
    check_backend(explainer, "--explainer", options)
    check_backend(simulator, "--simulator", options)
    parse_scorers(scorers)
    from neuronatlas.adapters.runners import check_runner

    check_runner(runner)
    if samples < 1:
        raise AtlasError(f"--samples {samples}: must be at least 1")
    typer.echo(
        f"neuronatlas run: ingest {source}, extract every layer of {model} "
        f"({'the whole corpus' if limit == 0 else f'{limit:,} excerpts'}), explain and score {neurons} neurons "
        f"({samples} explanation each) with {explainer} / {simulator}, "
        + ("no publish." if no_publish else "publish to published/atlas.")
    )
    result = _flows().atlas.atlas(
        root=root,
        source=source,
        model=model,
        limit=limit or None,
        layers=layers,
        neurons=neurons,
        samples=samples,
        explainer=explainer,
        simulator=simulator,
        scorers=scorers,
        publish_table=not no_publish,
        runner=runner,
        options=options,
    )
    from neuronatlas import catalog

    [report] = [r for r in catalog.runs(root) if r["run_id"] == result.run_id]
    _print_run(report)
    if result.table_uri:
        typer.echo(f"table:   {result.table_uri} (version {result.version}); `neuronatlas export OUT.parquet`")
    for plot in result.plots:
        typer.echo(f"plot:    {plot}")
    typer.echo(f"docs:    {result.data_docs}")
    typer.echo(f"report:  {result.report_uri}")
    if result.table_uri:
        typer.echo(f"browse:  neuronatlas view --root {root} --out site   (or `neuronatlas show LAYER:NEURON`)")


def _print_run(report: dict[str, Any]) -> None:
    stages = ", ".join(f"{stage['stage']} {stage['seconds']:.0f} s" for stage in report["stages"])
    llm = report.get("llm") or {}
    score: dict[str, Any] = next((s["summary"] for s in report["stages"] if s["stage"] == "score"), {})
    gaps = "; ".join(
        f"{name} {gap['gap']:+.3f}{'' if gap['significant'] else ' (n.s.)'} (n={gap['n']})"
        for name, gap in (score.get("scorers") or {}).items()
        if gap
    )
    typer.echo(
        f"{report['run_id']}  {report['status']:<9} {report.get('started_at', '')}  "
        f"neurons {report.get('neurons', '-')} (failed {report.get('neurons_failed', '-')})  "
        f"LLM {llm.get('calls', 0)} calls, {llm.get('prompt_tokens', 0):,}+{llm.get('completion_tokens', 0):,} tokens, "
        f"${llm.get('cost_usd', 0):.4f}  wall {report.get('wall_s', '-')} s"
    )
    typer.echo(f"    stages: {stages or 'none finished'}")
    if gaps:
        typer.echo(f"    gap vs permutation null: {gaps}")
    if report["status"] == "failed":
        typer.echo(f"    error: {report.get('error')}")


@app.command()
def runs(root: Root = "./atlas") -> None:
    """Atlas runs, newest first: status, neurons done and failed, LLM tokens and cost, wall time per stage."""
    from neuronatlas import catalog

    reports = catalog.runs(root)
    if not reports:
        typer.echo("no atlas runs yet; `neuronatlas run` makes one")
    for report in reports:
        _print_run(report)


@app.command()
def publish(
    root: Root = "./atlas",
    scores: Annotated[str | None, typer.Option(help="Score run id (default: the only one).")] = None,
) -> None:
    """Publish a score run (best explanation per neuron) as a new version of published/atlas."""
    result = _flows().publish.publish(root=root, scores=scores)
    if result.skipped:
        typer.echo(f"already published: {result.publish_id} (table {result.table_uri} is at version {result.version})")
        return
    typer.echo(
        f"published {result.publish_id}: version {result.version} of {result.table_uri}, {result.rows} rows offered, "
        f"{result.inserted} new, {result.updated} improved"
    )


@app.command()
def versions(root: Root = "./atlas") -> None:
    """The published table's history: one line per version."""
    from neuronatlas import catalog

    typer.echo(f"{'version':>7}  {'time (UTC)':<25} {'operation':<12} {'rows':>5} {'new':>4} {'upd':>4}  publish")
    for row in catalog.versions(root):
        typer.echo(
            f"{row['version']:>7}  {row['time']:<25} {row['operation']:<12} {row['rows']:>5} "
            f"{row['inserted'] if row['inserted'] is not None else '':>4} "
            f"{row['updated'] if row['updated'] is not None else '':>4}  {row['publish'] or ''}"
        )


@app.command()
def export(
    out: Annotated[str, typer.Argument(help="File to write (.parquet, .jsonl or .csv).")],
    root: Root = "./atlas",
    version: Annotated[int | None, typer.Option(help="Table version (default: the latest).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="parquet, jsonl or csv (default: from OUT).")] = None,
) -> None:
    """Write one version of the published table as one file polars, pandas and DuckDB read."""
    from neuronatlas import catalog

    written, rows, chosen = catalog.export(root, out, version, fmt)
    typer.echo(f"wrote {out}: version {written}, {rows} rows, {chosen}")


@app.command()
def lineage(
    root: Root = "./atlas",
    version: Annotated[int | None, typer.Option(help="Table version (default: the latest).")] = None,
    neuron: Annotated[str | None, typer.Option(help="One row: LAYER:NEURON.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """From a published version (or one row of it) back to the corpus and model it came from."""
    import json

    from neuronatlas import catalog

    result = catalog.lineage(root, version, neuron)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    typer.echo(f"{result['table']} version {result['version']}")
    for row in result.get("rows", []):
        where = f"{row['model']} layer {row['layer']} neuron {row['neuron']} ({row['sign']})"
        typer.echo(f"  row {where}: {row['explanation']!r}")
        typer.echo(
            f"    scores: top-and-random {row['top_and_random_score']}, random-only {row['random_only_score']}, "
            f"test {row['test_score']}, embedding AUC {row['embedding_auc']} (null {row['embedding_null']})"
        )
    for entry in result["publishes"]:
        typer.echo(
            f"  <- publish {entry['publish_id']} (table version {entry['table_version']}, {entry['committed_at']}, "
            f"{entry['rows_in_this_version']} rows here; flow run {entry['prefect_flow_run_id']}, code "
            f"{entry['code_version']}, prompt v{entry['prompt_version']})"
        )
        for depth, link in enumerate(entry["chain"], start=2):
            details = {k: v for k, v in link.items() if k not in {"dataset", "run_id", "uri", "validation"}}
            typer.echo(f"{'  ' * depth}<- {link['dataset']} {link['run_id']}: validation {link['validation']}")
            typer.echo(f"{'  ' * depth}   {link['uri']}")
            for key, value in details.items():
                typer.echo(f"{'  ' * depth}   {key}: {value}")


@app.command()
def view(
    out: Annotated[str, typer.Option(help="Folder to write the site into (created, or a site built before).")],
    root: Root = "./atlas",
    version: Annotated[int | None, typer.Option(help="Table version (default: the latest).")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Then serve it on 127.0.0.1 until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(help="Port for --serve.")] = 8000,
    embed: Annotated[
        bool, typer.Option("--embed/--no-embed", help="Explanation embeddings for semantic search.")
    ] = True,
) -> None:
    """Build the neuron viewer: a static site over one version of the published table."""
    configure_environment()
    from neuronatlas.viewer import site

    built = site.build(root, out, version, embed=embed)
    typer.echo(
        f"wrote {built.out}: table version {built.version}, {built.neurons} neurons, {built.pages} neuron pages"
        + (f", {len(built.compares)} version comparisons" if built.compares else "")
    )
    typer.echo(f"open file://{built.out}/index.html")
    if serve:
        from neuronatlas.viewer.serve import server

        try:
            httpd = server(built.out, port)
        except OSError as error:
            raise InputError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({error.strerror})") from None
        typer.echo(f"serving on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)")
        try:
            httpd.serve_forever()
        finally:
            httpd.server_close()


@app.command()
def show(
    neuron: Annotated[str, typer.Argument(help="LAYER:NEURON, e.g. 5:123.")],
    root: Root = "./atlas",
    version: Annotated[int | None, typer.Option(help="Table version (default: the latest).")] = None,
    model: Annotated[str | None, typer.Option(help="Subject model, when the table holds several.")] = None,
    sign: Annotated[str, typer.Option(help="positive or negative side.")] = "positive",
    excerpts: Annotated[int, typer.Option(help="Excerpts to show (0: all).")] = 6,
) -> None:
    """Print one published neuron: explanation, scores, and its excerpts, simulated above real."""
    from rich.console import Console

    from neuronatlas.adapters.storage import Storage
    from neuronatlas.viewer import data, terminal

    if sign not in {"positive", "negative"}:
        raise InputError(f"--sign {sign}: expected positive or negative")
    if excerpts < 0:
        raise InputError(f"--excerpts {excerpts}: expected 0 (all) or more")
    chosen, rows = data.table_rows(root, version)
    row = data.find_row(rows, neuron, model, sign, chosen)
    page = next(data.pages(Storage.open(root), [row]))
    terminal.render(page, chosen, Console(highlight=False), limit=excerpts or None)


@app.command()
def deploy(
    root: Root = "./atlas",
    pool: Annotated[str, typer.Option(help="Prefect process work pool (created if missing).")] = "neuronatlas",
    neurons: Annotated[str, typer.Option(help="Neurons each run explains and scores.")] = "2",
    runner: Annotated[str, typer.Option(help="local, or dask:ADDRESS for the runs.")] = "local",
) -> None:
    """Create the atlas deployments on a Prefect server (PREFECT_API_URL): nightly at 02:00 UTC and
    on demand. Start a worker to run them: `prefect worker start --pool neuronatlas`."""
    configure_environment()
    from neuronatlas.adapters.runners import parse_runner
    from neuronatlas.flows.deploy import deploy as create

    parse_runner(runner)
    names = create(root, pool, {"neurons": neurons, "runner": runner})
    typer.echo(f"deployments on {pool}: {', '.join(names)}")
    typer.echo(f"run now:   prefect deployment run {names[-1]} [--param neurons=24]")
    typer.echo(f"worker:    prefect worker start --pool {pool}")


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


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2; bugs keep tracebacks."""
    try:
        app(standalone_mode=False)
    except AtlasError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as error:
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()
