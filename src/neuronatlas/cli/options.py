"""Command-line options built from the typed configs: one option per config field, its type and
default from the field, its help from the field's docstring, its name `--field-name` unless the
config names another (`Config.options`)."""

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from neuronatlas.cli.app import Root
from neuronatlas.config import Config

ROOT = inspect.Parameter("root", inspect.Parameter.KEYWORD_ONLY, default="./atlas", annotation=Root)
CONTEXT = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)


def option(
    name: str, annotation: Any, default: Any, help_text: str | None, flag: str | None = None
) -> inspect.Parameter:
    """One keyword parameter carrying its typer option."""
    declared = (flag,) if flag else ()
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, typer.Option(*declared, help=help_text)],
    )


def options_of(config: type[Config], base: Config | None = None) -> list[inspect.Parameter]:
    """A config's fields as options, with `base`'s values as defaults."""
    base = base or config()
    return [
        option(
            parameter_name(config, name),
            field.annotation,
            getattr(base, name),
            field.description,
            config.options.get(name),
        )
        for name, field in config.model_fields.items()
    ]


def parameter_name(config: type[Config], field: str) -> str:
    """The command's parameter for a field: its option's name (`--llm-device` -> llm_device)."""
    return config.option(field).split("/")[0].removeprefix("--").replace("-", "_")


def command(
    app: typer.Typer, name: str, parameters: list[inspect.Parameter], body: Callable[..., Any], doc: str
) -> None:
    """Register `body(**values)` as command `name` with these options (no duplicates allowed)."""
    names = [p.name for p in parameters]
    if len(names) != len(set(names)):
        raise ValueError(f"{name}: duplicate options {names}")

    def run(**values: Any) -> Any:
        return body(**values)

    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__doc__ = doc
    run.__name__ = name.replace("-", "_")
    app.command(name)(run)


def given(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The values typed on the command line (not left at their defaults)."""
    typed = ("COMMANDLINE", "ENVIRONMENT")  # by name: typer may bring a click of its own
    return {
        name: value for name, value in values.items() if getattr(ctx.get_parameter_source(name), "name", "") in typed
    }


def split(values: dict[str, Any], *configs: type[Config]) -> list[dict[str, Any]]:
    """The command's `values` shared out among the configs whose fields they are."""
    shares = []
    for config in configs:
        names = {parameter_name(config, field): field for field in config.model_fields}
        shares.append({names[name]: value for name, value in values.items() if name in names})
    return shares
