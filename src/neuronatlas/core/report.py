"""The validity harness's markdown report: each scorer against its permutation null, whether the
simulator listens, and the oracle neurons."""

from typing import Any

import numpy as np

from neuronatlas.core.summary import verdict


def _gap_text(gap: dict[str, Any] | None) -> str:
    if gap is None:
        return "—"
    return f"{_number(gap['gap'], True)} ({_number(gap['ci95'][0], True)} .. {_number(gap['ci95'][1], True)})"


def _short(backend_id: str | None) -> str:
    """A backend or model id without its checksum."""
    return backend_id.split("@")[0] if backend_id else "not run"


def _number(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def gap_rows(
    summary: dict[str, Any], key: str, first_method: bool, earlier: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A score run's gap per scorer as report rows labelled `key` (explanation format / method):
    the embedding and lookup figures do not depend on the simulation method, and the lookup
    baseline is the same for every explanation format, so each is reported once."""
    rows = []
    for name, gap in summary["scorers"].items():
        if gap is None or (name != "simulation" and not first_method):
            continue
        if name == "lookup baseline" and any(r["scorer"] == name for r in earlier):
            continue
        label = name if name == "lookup baseline" else f"{key} · {name}"
        every = summary["scorers_all_samples"][name]
        rows.append({"label": label, "explanations": key, "scorer": name, **gap, "all_samples": every})
    return rows


def render_report(
    context: dict[str, Any], rows: list[dict[str, Any]], diagnostics: list[dict[str, Any]], oracles: list[dict]
) -> str:
    """The harness's markdown report."""
    lines = _header(context) + _gap_table(rows) + _diagnostics(diagnostics)
    if oracles:
        lines += _oracle_table(oracles)
    lines += ["", "![paired gaps](gaps.png)", ""]
    return "\n".join(lines)


def _header(context: dict[str, Any]) -> list[str]:
    layers = ", ".join(map(str, context["layers"]))
    return [
        f"# Validity report {context['run_id']}",
        "",
        f"- subject: {context['model']} (activation run {context['activations_run']}), "
        f"{len(context['neurons'])} neurons in layers {layers}",
        f"- explainer: {_short(context['explainer'])}; simulator: {_short(context['simulator'])}; "
        f"embedding: {_short(context['encoder'])}",
        f"- parameters: {context['parameters']}; prompt version {context['prompt_version']}; "
        f"code {context['code_version']}; {context['seconds']:.0f} s",
        "",
        "## Each scorer against its permutation null",
        "",
        "The null scores each explanation on another neuron's records (a seeded derangement). Each neuron's",
        "best sample (chosen on train/calibration spans, what gets published) counts once; the gap is the mean",
        "of real - null over neurons, its 95% interval a percentile bootstrap over neurons. The last column is",
        "the same gap over all samples (each neuron's samples averaged).",
        "",
    ]


def _gap_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| explanations | scorer | real | null | gap | 95% CI | real > null | verdict | all samples: gap, CI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        reading = f"**{verdict(row)}**" if row["significant"] else verdict(row)
        lines.append(
            f"| {row['explanations'] if row['scorer'] != 'lookup baseline' else '(no LLM)'} | {row['scorer']} | "
            f"{_number(row['real'])} | {_number(row['null'])} | {_number(row['gap'], True)} | "
            f"{_number(row['ci95'][0], True)} .. {_number(row['ci95'][1], True)} | "
            f"{row['real_above_null']} of {row['n']} | {reading} | {_gap_text(row.get('all_samples'))} |"
        )
    return lines


def _diagnostics(diagnostics: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Does the simulator listen?",
        "",
        "Explanation sensitivity: mean correlation between simulations of different explanations on the same",
        "excerpts (target < 0.8; 1.0 means the explanation is ignored). Digit mass: probability on the digit",
        "tokens where the simulator reads an activation (target > 0.5).",
        "",
        "| explanations | explanation sensitivity | digit mass | best sample's embedding AUC |",
        "|---|---|---|---|",
    ]
    for row in diagnostics:
        lines.append(
            f"| {row['explanations']} | {_number(row['explanation_sensitivity'])} | "
            f"{_number(row['mean_digit_mass'])} | {_number(row['mean_best_embedding_auc'])} |"
        )
    return lines


def _oracle_table(oracles: list[dict[str, Any]]) -> list[str]:
    ran = [
        name
        for name in ("simulation", "embedding", "detection", "fuzzing")
        if any(r.get(name) is not None for r in oracles)
    ]
    columns = {name: f"{name}_null" for name in ran} | {"lookup baseline": "lookup_null"}
    lines = [
        "",
        "## Oracle neurons",
        "",
        "Synthetic neurons that fire 1.0 on one token class over real corpus windows. Real: the correct",
        "explanation on the oracle's records; null: the same explanation on another oracle's records.",
        "",
        "| oracle | explanation | null on | " + " | ".join(f"{name} real / null" for name in columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for row in oracles:
        cells = [f"{_number(row.get(name))} / {_number(row.get(null))}" for name, null in columns.items()]
        lines.append(f"| {row['oracle']} | {row['explanation']} | {row['null_on']} | " + " | ".join(cells) + " |")
    return lines
