"""Oracle neurons: hand-checkable synthetic records over given windows."""

import numpy as np

from neuronatlas.core.oracle import ORACLES, oracle_records


def test_oracle_fires_on_its_class_and_splits_like_extraction() -> None:
    commas = next(oracle for oracle in ORACLES if oracle.name == "comma")
    windows = [(i, tuple([" a", ","] * (i % 4) + [" b"] * 3)) for i in range(40)]
    records = oracle_records(7, commas, windows, np.random.default_rng(0), top_k=8, random_k=6)
    top = records.select(["top"], ["train", "calibration", "valid", "test"])
    random = records.select(["random"], ["calibration", "valid", "test"])
    assert len(top) == 8 and len(random) == 6
    # the windows with most commas first (3 each), ties by sequence id
    assert [r.sequence_id for r in sorted(top, key=lambda r: r.rank)] == [3, 7, 11, 15, 19, 23, 27, 31]
    assert [r.split for r in sorted(top, key=lambda r: r.rank)][:4] == ["train", "calibration", "valid", "test"]
    assert not {r.sequence_id for r in top} & {r.sequence_id for r in random}
    for record in top + random:
        assert record.activations.tolist() == [1.0 if t == "," else 0.0 for t in record.tokens]
