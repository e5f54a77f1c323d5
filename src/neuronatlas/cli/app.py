"""The `neuronatlas` Typer application, and what every command shares."""

from typing import Annotated, Any

import typer

from neuronatlas.errors import InputError
from neuronatlas.runtime import configure_environment, quiet_user_errors

app = typer.Typer(
    name="neuronatlas",
    help="Explain the neurons of a language model with another one, as a versioned data product.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def given_root(root: str) -> str:
    """`--root ''` would be the current folder: refused."""
    if not root.strip():
        raise InputError(f"--root {root!r}: empty")
    return root


Root = Annotated[
    str,
    typer.Option(
        envvar="NEURONATLAS_ROOT", callback=given_root, help="Storage root: a local folder or s3://bucket/prefix."
    ),
]


def flows() -> Any:
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


def print_run(report: dict[str, Any]) -> None:
    """One atlas run's report in three lines: totals, stage times, each scorer's gap."""
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


def print_gaps(figures: dict[str, Any]) -> None:
    """Each scorer against its permutation null, one line each, as the score flow logs them."""
    from neuronatlas.core.summary import verdict

    typer.echo(f"  {'scorer':<16} {'real':>7} {'null':>7} {'gap':>7}  95% CI            n  verdict")
    for name, gap in figures["scorers"].items():
        if gap is None:
            typer.echo(f"  {name:<16} no paired scores (not run, or no control partner)")
            continue
        interval = f"{gap['ci95'][0]:+.3f}..{gap['ci95'][1]:+.3f}"
        typer.echo(
            f"  {name:<16} {gap['real']:>7.3f} {gap['null']:>7.3f} {gap['gap']:>+7.3f}  {interval:<16} "
            f"{gap['n']:>3}  {verdict(gap)}"
        )
