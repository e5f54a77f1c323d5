"""The run's per-scorer figures: paired gaps over neurons (samples averaged) and the
significance flag; explanation sensitivity from the simulation tables."""

import numpy as np
import pandas as pd

from neuronatlas.core.summary import explanation_sensitivity_of, scorer_gap


def scores(rows: list[tuple[int, int, float | None, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["layer", "neuron", "embedding_auc", "embedding_null"])


def test_gap_averages_a_neurons_samples_then_resamples_neurons() -> None:
    frame = scores([(1, 0, 0.9, 0.5), (1, 0, 0.7, 0.5), (1, 1, 0.8, 0.4), (2, 5, 0.6, 0.6), (2, 6, None, 0.3)])
    gap = scorer_gap(frame, "embedding")
    assert gap is not None
    assert gap["n"] == 3  # neuron (2, 6) has no real score
    assert gap["real"] == round((0.8 + 0.8 + 0.6) / 3, 4) and gap["null"] == round((0.5 + 0.4 + 0.6) / 3, 4)
    assert gap["gap"] == round((0.3 + 0.4 + 0.0) / 3, 4)
    assert gap["real_above_null"] == 2
    assert gap["ci95"][0] <= gap["gap"] <= gap["ci95"][1]
    assert gap["significant"] is False  # 3 neurons: too few to tell, whatever the interval


def test_a_gap_whose_interval_reaches_zero_is_not_significant() -> None:
    rng = np.random.default_rng(0)
    null = rng.uniform(0.3, 0.7, 30)
    noise = scores([(0, i, float(null[i] + rng.normal(0, 0.1)), float(null[i])) for i in range(30)])
    assert scorer_gap(noise, "embedding")["significant"] is False  # type: ignore[index]
    shifted = scores([(0, i, float(null[i] + 0.2), float(null[i])) for i in range(30)])
    assert scorer_gap(shifted, "embedding")["significant"] is True  # type: ignore[index]
    assert scorer_gap(scores([(0, 1, None, 0.5)]), "embedding") is None
    few = scorer_gap(scores([(0, i, float(null[i] + 0.2), float(null[i])) for i in range(4)]), "embedding")
    assert few is not None and few["ci95"][0] > 0 and few["significant"] is False  # 4 neurons: cannot tell


def test_sensitivity_compares_explanations_on_the_same_excerpts() -> None:
    def row(layer: int, neuron: int, explanation: int, sequence: int, values: list[float], **record: int) -> dict:
        return {
            "layer": layer,
            "neuron": neuron,
            "explanation_id": explanation,
            "sequence_id": sequence,
            "split": "valid",
            "simulated_activations": values,
            **record,
        }

    # neuron (0, 1)'s two samples agree exactly on its valid excerpts: correlation 1
    simulations = pd.DataFrame([row(0, 1, 0, 10, [0, 1, 2]), row(0, 1, 1, 10, [0, 2, 4])])
    # neuron (0, 2)'s explanation on (0, 1)'s excerpt, opposite ranking: correlation -1
    control = pd.DataFrame([row(0, 2, 0, 10, [2, 1, 0], record_layer=0, record_neuron=1)])
    # pairs among the three simulations of excerpt 10: +1, -1, -1
    assert explanation_sensitivity_of(simulations, control) == np.mean([1.0, -1.0, -1.0])
