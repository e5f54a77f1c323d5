"""The `neuronatlas` command: pipeline commands (`pipeline.py`), reading commands (`browse.py`),
options built from the typed configs (`options.py`)."""

import sys

import typer

from neuronatlas.cli import browse, pipeline  # noqa: F401  (registers the commands)
from neuronatlas.cli.app import app
from neuronatlas.errors import AtlasError


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
