"""The `neuronatlas` command: pipeline commands (`pipeline.py`), reading commands (`browse.py`),
options built from the typed configs (`options.py`)."""

import sys
from typing import Any, NoReturn

import typer

from neuronatlas.cli import browse, pipeline  # noqa: F401  (registers the commands)
from neuronatlas.cli.app import app
from neuronatlas.errors import AtlasError


def main() -> None:
    """Entry point: user and usage errors become one line on stderr and exit code 2; bugs keep
    tracebacks."""
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

        if isinstance(error, typer.TyperException | click.ClickException):
            usage_error(error)
        raise


def usage_error(error: Any) -> NoReturn:
    """A usage error of typer (which brings a click of its own) or click, as one line naming the
    command's help; no arguments at all show the help."""
    if type(error).__name__ == "NoArgsIsHelpError":
        error.show()
        sys.exit(error.exit_code)
    ctx = getattr(error, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    message = " ".join(error.format_message().split()).rstrip(".")
    typer.echo(f"error: {message}{hint}", err=True)
    sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
