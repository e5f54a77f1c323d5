"""The published table's MERGE rule, history and time travel on a real Delta table, in a local
folder and on a real S3-compatible server."""

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from neuronatlas.adapters.delta import DeltaLocation
from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import published
from neuronatlas.datasets.published import REPLACE_WHEN
from neuronatlas.errors import InputError


def rows(publish_id: str, entries: list[tuple[int, str, float, str]]) -> pa.Table:
    """(neuron, rank_by, rank_score, explanation) -> full published rows of layer 3."""
    filled = []
    for neuron, rank_by, rank_score, explanation in entries:
        row = {field.name: None for field in published.SCHEMA}
        row.update(
            model="m",
            layer=3,
            neuron=neuron,
            sign="positive",
            explanation=explanation,
            explanation_id=0,
            rank_by=rank_by,
            rank_score=rank_score,
            published_at=datetime.now(UTC),
            **{name: publish_id for name in published.LINEAGE},
        )
        filled.append(row)
    return pa.Table.from_pylist(filled, schema=published.SCHEMA)


def test_a_publish_replaces_only_rows_it_improves_and_every_version_reads_back(root: str) -> None:
    location = DeltaLocation(Storage.open(root), published.TABLE_PATH)
    assert not location.exists()
    location.create(published.SCHEMA, {"neuronatlas_format_version": "1"})
    first = rows(
        "p-1", [(1, "selection_auc", 0.6, "a"), (2, "selection_auc", 0.7, "b"), (3, "selection_auc", 0.5, "c")]
    )
    merged = location.merge(first, published.KEY, REPLACE_WHEN, {published.PUBLISH_KEY: "p-1"})
    assert merged["version"] == 1 and merged["num_target_rows_inserted"] == 3
    second = rows(
        "p-2",
        [
            (1, "selection_auc", 0.8, "a better one"),  # improves: replaced
            (2, "selection_auc", 0.65, "a worse one"),  # does not: kept
            (3, "top_and_random_score", 0.1, "other criterion"),  # ranked otherwise: the newer replaces
            (4, "selection_auc", 0.55, "new"),  # new neuron: inserted
        ],
    )
    merged = location.merge(second, published.KEY, REPLACE_WHEN, {published.PUBLISH_KEY: "p-2"})
    assert merged["version"] == 2
    assert (merged["num_target_rows_inserted"], merged["num_target_rows_updated"]) == (1, 2)
    latest = {r["neuron"]: r["explanation"] for r in location.read(None, published.SCHEMA).to_pylist()}
    assert latest == {1: "a better one", 2: "b", 3: "other criterion", 4: "new"}
    # time travel: version 1 is the first publish, as written
    assert location.read(1, published.SCHEMA).sort_by("neuron").equals(first.sort_by("neuron"))
    assert location.read(0, published.SCHEMA).num_rows == 0
    history = location.history()
    assert [c["version"] for c in history] == [2, 1, 0]
    assert [c.get(published.PUBLISH_KEY) for c in history[:2]] == ["p-2", "p-1"]
    # another publisher commits after p-2: it improves neuron 4 (new in p-2) and adds neuron 5
    third = rows("p-3", [(4, "selection_auc", 0.9, "best"), (5, "selection_auc", 0.7, "five")])
    assert location.merge(third, published.KEY, REPLACE_WHEN, {published.PUBLISH_KEY: "p-3"})["version"] == 3
    # reverting p-2 undoes p-2 alone: its replaced rows are back as version 1 held them, and p-3's
    # rows stay, the one it replaced since included
    reverted = location.revert(
        2, published.KEY, ("publish_id", "p-2"), published.SCHEMA, {published.ROLLED_BACK_KEY: "p-2"}
    )
    assert reverted is not None and reverted["version"] == 4
    latest = {
        r["neuron"]: (r["explanation"], r["publish_id"]) for r in location.read(None, published.SCHEMA).to_pylist()
    }
    assert latest == {1: ("a", "p-1"), 2: ("b", "p-1"), 3: ("c", "p-1"), 4: ("best", "p-3"), 5: ("five", "p-3")}
    assert location.history()[0][published.ROLLED_BACK_KEY] == "p-2"
    # a version whose rows are all gone again has nothing left to undo
    assert location.revert(2, published.KEY, ("publish_id", "p-2"), published.SCHEMA, {}) is None


def test_a_version_written_before_a_column_joined_the_contract_reads_back_with_it_null(tmp_path: Path) -> None:
    """Tables published before `<scorer>_run_neurons` existed still read, export and view."""
    location = DeltaLocation(Storage.open(str(tmp_path)), published.TABLE_PATH)
    older = pa.schema([field for field in published.SCHEMA if not field.name.endswith("_run_neurons")])
    location.create(older, {"neuronatlas_format_version": "1"})
    location.merge(rows("p-1", [(1, "selection_auc", 0.6, "a")]).select(older.names), published.KEY, REPLACE_WHEN, {})
    read = location.read(None, published.SCHEMA)
    assert read.schema == published.SCHEMA and read["explanation"].to_pylist() == ["a"]
    assert read["simulation_run_neurons"].null_count == 1
    with pytest.raises(InputError, match="version 1: column explanation is missing"):
        location._conform(read.drop_columns(["explanation"]), published.SCHEMA, 1)
