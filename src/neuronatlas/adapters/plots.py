"""Pictures a person would rather look at than read (PNG bytes, drawn off-screen)."""

import io
from typing import Any

import numpy as np
import pandas as pd


def plot_layer_statistics(stats: pd.DataFrame, title: str) -> bytes:
    """Per layer, histograms of each neuron's max activation and fraction of positive tokens,
    drawn as heat maps: one row per layer, colour = number of neurons in the bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(int(layer) for layer in stats["layer"].unique())
    positive_max = stats["max"][stats["max"] > 0]
    low = max(float(positive_max.quantile(0.001)) if len(positive_max) else 1e-3, 1e-3)
    high = max(float(stats["max"].max()), low * 10)
    panels = [
        ("max", "max activation of the neuron over all tokens (log scale)", np.geomspace(low, high, 41), "log"),
        ("frac_positive", "fraction of tokens with activation > 0", np.linspace(0, 1, 41), "linear"),
    ]
    figure, axes = plt.subplots(1, 2, figsize=(12, 1.4 + 0.28 * len(layers)), squeeze=False)
    rows = np.arange(len(layers) + 1) - 0.5
    for axis, (column, label, bins, scale) in zip(axes[0], panels, strict=True):
        counts = np.stack(
            [
                np.histogram(stats.loc[stats["layer"] == layer, column].clip(bins[0], bins[-1]), bins)[0]
                for layer in layers
            ]
        )
        mesh = axis.pcolormesh(bins, rows, counts, cmap="viridis")
        axis.set_xscale(scale)
        axis.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=7)
        axis.set_xlabel(label)
        axis.set_ylabel("layer")
        figure.colorbar(mesh, ax=axis, label="neurons")
    figure.suptitle(title)
    figure.tight_layout()
    return _png(figure)


def plot_real_vs_null(scores: pd.DataFrame, title: str) -> bytes:
    """Left: histogram of each explanation's top-and-random score beside its permutation-control
    score (the same explanation on another neuron's records). Right: real against null, one dot
    per explanation, the diagonal marking "no better than chance"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = scores["top_and_random_score"].dropna()
    null = scores["null_score"].dropna()
    paired = scores.dropna(subset=["top_and_random_score", "null_score"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bins = np.linspace(-1, 1, 41)
    left.hist(real, bins=bins, alpha=0.7, label=f"real (n={len(real)}, mean {real.mean():.3f})")
    left.hist(null, bins=bins, alpha=0.7, label=f"permutation null (n={len(null)}, mean {null.mean():.3f})")
    left.set_xlabel("top-and-random score (pooled correlation)")
    left.set_ylabel("explanations")
    left.legend(fontsize=8)
    right.scatter(paired["null_score"], paired["top_and_random_score"], s=14, alpha=0.7)
    right.plot([-1, 1], [-1, 1], color="grey", linewidth=1)
    right.set_xlim(-1, 1)
    right.set_ylim(-1, 1)
    right.set_xlabel("null score (other neuron's records)")
    right.set_ylabel("real score")
    above = int((paired["top_and_random_score"] > paired["null_score"]).sum())
    right.set_title(f"real > null for {above} of {len(paired)}", fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


SCORE_PANELS = (
    ("top_and_random_score", "null_score", "simulation: top-and-random score", (-1.0, 1.0)),
    ("embedding_auc", "embedding_null", "embedding AUC", (0.0, 1.0)),
)


def plot_scores_by_layer(best: pd.DataFrame, title: str) -> bytes:
    """As the paper's figure of scores by layer: per layer, the distribution of each neuron's
    best explanation's score (box and points) beside its permutation null, for the simulation
    score and the embedding AUC (a panel per scorer that ran)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [panel for panel in SCORE_PANELS if best[panel[0]].notna().any()] or [SCORE_PANELS[0]]
    layers = sorted(int(layer) for layer in best["layer"].unique())
    width = max(6.0, 1.2 + 0.5 * len(layers))
    figure, axes = plt.subplots(len(panels), 1, figsize=(width, 3.2 * len(panels)), squeeze=False)
    jitter = np.random.default_rng(0)
    for axis, (real, null, label, limits) in zip(axes[:, 0], panels, strict=True):
        for offset, column, colour in ((-0.18, real, "tab:blue"), (0.18, null, "tab:grey")):
            values = [best.loc[best["layer"] == layer, column].dropna().to_numpy() for layer in layers]
            positions = [i + offset for i in range(len(layers))]
            kept = [(p, v) for p, v in zip(positions, values, strict=True) if len(v)]
            if kept:
                axis.boxplot([v for _, v in kept], positions=[p for p, _ in kept], widths=0.3, showfliers=False)
            for position, points in kept:
                axis.scatter(position + jitter.uniform(-0.06, 0.06, len(points)), points, s=10, color=colour, alpha=0.7)
        axis.scatter([], [], color="tab:blue", label="best explanation")
        axis.scatter([], [], color="tab:grey", label="permutation null")
        axis.set_xticks(range(len(layers)), [str(layer) for layer in layers], fontsize=8)
        axis.set_xlim(-0.6, len(layers) - 0.4)
        axis.set_ylim(*limits)
        axis.set_xlabel("layer")
        axis.set_ylabel(label)
        axis.legend(fontsize=8, loc="upper right")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def plot_gaps(rows: list[dict], title: str) -> bytes:
    """Validity harness: per (explanations, scorer) row, the mean paired gap real - null with its
    bootstrap 95% interval; a row whose interval stays right of 0 beats its permutation null."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 1.2 + 0.42 * len(rows)))
    for y, row in enumerate(rows):
        low, high = row["ci95"]
        colour = "tab:green" if row["significant"] else "tab:red"
        axis.errorbar(row["gap"], y, xerr=[[row["gap"] - low], [high - row["gap"]]], fmt="o", color=colour, capsize=3)
    axis.axvline(0, color="grey", linewidth=1)
    axis.set_yticks(range(len(rows)), [f"{row['label']} (n={row['n']})" for row in rows], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("paired gap: real - permutation null (95% bootstrap CI); green: CI excludes 0")
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def _png(figure: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
