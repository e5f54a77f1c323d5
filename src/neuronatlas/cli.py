"""The `neuronatlas` command."""

import sys
from typing import Annotated, Any

import typer

from neuronatlas.errors import AtlasError
from neuronatlas.runtime import configure_environment, quiet_user_errors

app = typer.Typer(
    name="neuronatlas",
    help="Explain the neurons of a language model with another one, as a versioned data product.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Root = Annotated[
    str,
    typer.Option(envvar="NEURONATLAS_ROOT", help="Storage root: a local folder or s3://bucket/prefix."),
]


def _flows() -> Any:
    """Import Prefect (and the flows) only once the environment is set up."""
    configure_environment()
    from neuronatlas.flows import ingest

    quiet_user_errors()
    return ingest


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
) -> None:
    """Tokenise a corpus source into fixed windows and commit it as a validated dataset."""
    configure_environment()
    from neuronatlas.adapters.sources import SourceSpec
    from neuronatlas.flows.ingest import check_ingest_inputs

    spec = SourceSpec(source, text_field, id_field, split, encoding_errors)  # type: ignore[arg-type]
    check_ingest_inputs(spec, root, tokenizer_of, window)
    result = _flows().ingest_corpus(
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
def run(root: Root = "./atlas") -> None:
    """Run the atlas on the embedded default. For now: ingestion of the default corpus."""
    typer.echo(
        "neuronatlas run: the later stages (extract, explain, score, publish) are not built yet; "
        "running what exists: ingestion of the default corpus (wiki-vital-en, smollm2-135m, 64-token windows)."
    )
    ingest(root=root)


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
