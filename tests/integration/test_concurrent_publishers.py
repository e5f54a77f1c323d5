"""Publishers that commit to one Delta table at the same moment (a nightly run overlapping an
on-demand one): every MERGE lands, retried after a concurrent commit, and no row is lost."""

import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pyarrow as pa

from neuronatlas.adapters.delta import DeltaLocation
from neuronatlas.adapters.storage import Storage

SCHEMA = pa.schema([pa.field("key", pa.int64(), nullable=False), pa.field("value", pa.string())])
PUBLISHERS = 4
ROWS = 50


def publish(root: str, index: int, barrier: Barrier) -> None:
    rows = pa.table(
        {"key": list(range(index * ROWS, (index + 1) * ROWS)), "value": [f"publisher {index}"] * ROWS},
        schema=SCHEMA,
    )
    table = DeltaLocation(Storage.open(root), "published/atlas")
    barrier.wait()
    table.merge(rows, ("key",), "true", {"publisher": str(index)})


def test_four_publishers_at_once_all_land(tmp_path: Path) -> None:
    root = str(tmp_path / "atlas")
    DeltaLocation(Storage.open(root), "published/atlas").create(SCHEMA, {"created_by": "test"})
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PUBLISHERS)
    processes = [context.Process(target=publish, args=(root, i, barrier)) for i in range(PUBLISHERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * PUBLISHERS
    table = DeltaLocation(Storage.open(root), "published/atlas").open()
    published = table.to_pyarrow_table()
    assert sorted(published["key"].to_pylist()) == list(range(PUBLISHERS * ROWS))  # no row lost, none twice
    merges = [commit for commit in table.history() if commit["operation"] == "MERGE"]
    assert sorted(commit["publisher"] for commit in merges) == [str(i) for i in range(PUBLISHERS)]
