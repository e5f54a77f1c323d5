"""The commands that read a root: corpora, runs, the published table's versions, exports and
lineage, and the neuron viewer (`view`, `show`)."""

from typing import TYPE_CHECKING, Annotated

import typer

from neuronatlas.cli.app import Root, app, flows, print_run
from neuronatlas.errors import InputError
from neuronatlas.runtime import configure_environment

if TYPE_CHECKING:
    from neuronatlas.adapters.storage import Storage


def existing(root: str) -> "Storage":
    """The root's `Storage`, refused when nothing is there."""
    from neuronatlas.adapters.storage import Storage

    storage = Storage.open(root)
    if not storage.exists(""):
        raise InputError(f"--root {root}: no such root")
    return storage


@app.command()
def corpora(root: Root = "./atlas") -> None:
    """List the committed corpora under the root."""
    from neuronatlas.catalog.runs import committed

    storage = existing(root)
    names = committed(storage, "corpus")
    if not names:
        typer.echo(f"no corpus under {storage.uri()}")
    for name in names:
        manifest = storage.manifest(f"corpus/{name}")
        typer.echo(
            f"{name}\t{manifest['rows']:,} windows\t{manifest['tokens']:,} tokens\t{manifest['source']['label']}"
        )


@app.command()
def runs(root: Root = "./atlas") -> None:
    """Atlas runs, newest first: status, neurons done and failed, LLM tokens and cost, wall time per stage."""
    from neuronatlas import catalog

    existing(root)
    reports = catalog.runs(root)
    if not reports:
        typer.echo("no atlas runs yet; `neuronatlas run` makes one")
    for report in reports:
        print_run(report)


@app.command()
def publish(
    root: Root = "./atlas",
    scores: Annotated[str | None, typer.Option(help="Score run id (default: the only one).")] = None,
) -> None:
    """Publish a score run (best explanation per neuron) as a new version of published/atlas."""
    from neuronatlas.catalog.runs import committed_run

    storage = existing(root)  # checked before a flow run starts
    committed_run(storage, "scores", scores, "score")
    result = flows().publish.publish(root=root, scores=scores)
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

    history = catalog.versions(root)
    typer.echo(f"{'version':>7}  {'time (UTC)':<25} {'operation':<12} {'rows':>5} {'new':>4} {'upd':>4}  publish")
    for row in history:
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
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
) -> None:
    """Write one version of the published table as one file polars, pandas and DuckDB read."""
    from pathlib import Path

    from neuronatlas import catalog

    if not overwrite and Path(out).expanduser().is_file():
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
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
    port: Annotated[int, typer.Option(help="Port for --serve (0: any free port).")] = 8000,
    embed: Annotated[
        bool, typer.Option("--embed/--no-embed", help="Explanation embeddings for semantic search.")
    ] = True,
) -> None:
    """Build the neuron viewer: a static site over one version of the published table."""
    configure_environment()
    from neuronatlas.viewer import site
    from neuronatlas.viewer.serve import check_port

    check_port(port)
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
    if not data.NEURON.match(neuron):  # before anything is read
        raise InputError(f"{neuron}: expected LAYER:NEURON, e.g. 5:123")
    chosen, rows = data.table_rows(root, version)
    row = data.find_row(rows, neuron, model, sign, chosen)
    page = next(data.pages(Storage.open(root), [row]))
    terminal.render(page, chosen, Console(highlight=False), limit=excerpts or None)
