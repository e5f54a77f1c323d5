"""Oracle neurons: synthetic neurons built to fire on one class of token, over real corpus windows.

Their correct explanation is known, so a scorer that cannot put it far above the permutation null
(the same explanation on another oracle's records) cannot tell good explanations from bad ones.
Hand-checkable: each fires 1.0 on its class and 0 elsewhere.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuronatlas.core.explain import NeuronRecords, Record
from neuronatlas.core.records import RANDOM_SPLITS, TOP_SPLITS
from neuronatlas.core.scorers import Scorer, score_neuron
from neuronatlas.core.scoring import derangement

ORACLE_LAYER = -1
"""Layer number of oracle records (no real layer has it)."""


@dataclass(frozen=True)
class Oracle:
    name: str
    explanation: str
    """What completes "the main thing this neuron does is find"."""
    fires: Callable[[str], bool]


ORACLES = (
    Oracle("digits", "numbers written with digits, such as years and dates.", lambda t: any(c.isdigit() for c in t)),
    Oracle("the", 'the word "the".', lambda t: t.strip().lower() == "the"),
    Oracle("comma", "commas.", lambda t: t.strip() == ","),
    Oracle("of", 'the word "of".', lambda t: t.strip().lower() == "of"),
)


def oracle_records(
    index: int,
    oracle: Oracle,
    windows: Sequence[tuple[int, tuple[str, ...]]],
    rng: np.random.Generator,
    top_k: int = 20,
    random_k: int = 15,
) -> NeuronRecords:
    """The oracle's top records (the windows with most class tokens) and a seeded random sample of
    the others, split as extraction splits them (rank modulo the splits)."""

    def record(kind: str, rank: int, window: tuple[int, tuple[str, ...]]) -> Record:
        sequence_id, tokens = window
        values = np.array([1.0 if oracle.fires(token) else 0.0 for token in tokens], dtype=np.float32)
        splits = TOP_SPLITS if kind == "top" else RANDOM_SPLITS
        return Record(kind, splits[rank % len(splits)], rank, sequence_id, tokens, values)

    counts = [sum(oracle.fires(token) for token in tokens) for _, tokens in windows]
    order = sorted((i for i in range(len(windows)) if counts[i] > 0), key=lambda i: (-counts[i], windows[i][0]))
    top = order[:top_k]
    rest = np.array(sorted(set(range(len(windows))) - set(top)))
    sample: list[int] = rng.choice(rest, size=min(random_k, len(rest)), replace=False).tolist() if len(rest) else []
    records = [record("top", rank, windows[i]) for rank, i in enumerate(top)]
    records += [record("random", rank, windows[i]) for rank, i in enumerate(sample)]
    return NeuronRecords(ORACLE_LAYER, index, tuple(records))


def score_oracles(
    scorers: Sequence[Scorer],
    windows: Sequence[tuple[int, tuple[str, ...]]],
    rng: np.random.Generator,
    top_k: int = 20,
    random_k: int = 15,
) -> list[dict[str, Any]]:
    """Each oracle's correct explanation scored on its records (`top_k` top, `random_k` random)
    and, for the null, on another oracle's (a derangement): one row per oracle, `<scorer>` and
    `<scorer>_null` for each scorer that ran, and the lookup baseline."""
    records = [oracle_records(i, oracle, windows, rng, top_k, random_k) for i, oracle in enumerate(ORACLES)]
    partners = derangement(len(records), rng)
    rows = []
    for i, oracle in enumerate(ORACLES):
        explanation = [{"explanation_id": 0, "explanation": oracle.explanation, "failure_reason": None}]
        outcome = score_neuron(scorers, records[i], explanation, records[int(partners[i])])
        results = outcome.explanations[0].results
        scores = {
            key: value
            for name, result in results.items()
            for key, value in ((name, result.real.value), (f"{name}_null", result.null.value))
        }
        rows.append(
            {
                "oracle": oracle.name,
                "explanation": oracle.explanation,
                "null_on": ORACLES[int(partners[i])].name,
                **scores,
                "lookup baseline": outcome.baseline.real.value,
                "lookup_null": outcome.baseline.null.value,
            }
        )
    return rows
