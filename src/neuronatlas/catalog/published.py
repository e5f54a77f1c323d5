"""What users read back from a root: the published table's versions, exports of any version,
the lineage of a version or a row, and the runs report. No Prefect here."""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from neuronatlas.adapters.delta import DeltaLocation
from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.lineage import lineage_chain
from neuronatlas.datasets import published
from neuronatlas.datasets.runs import RUNS
from neuronatlas.errors import InputError

EXPORT_FORMATS = ("parquet", "jsonl", "csv")
PUBLISH_KEY = published.PUBLISH_KEY
ROLLED_BACK_KEY = published.ROLLED_BACK_KEY


def table(root: str) -> DeltaLocation:
    return DeltaLocation(Storage.open(root), published.TABLE_PATH)


def versions(root: str) -> list[dict[str, Any]]:
    """The table's history, oldest first: version, time, operation, the publish behind it,
    rows inserted and updated, and the table's row count at that version."""
    location = table(root)
    rows = []
    for commit in sorted(location.history(), key=lambda c: int(c["version"])):
        metrics = commit.get("operationMetrics") or {}
        undone = commit.get(ROLLED_BACK_KEY)
        version = int(commit["version"])
        rows.append(
            {
                "version": version,
                "time": datetime.fromtimestamp(commit["timestamp"] / 1000, UTC).isoformat(timespec="seconds"),
                "operation": commit.get("operation"),
                "publish": commit.get(PUBLISH_KEY) or (f"rollback of {undone}" if undone else None),
                "scores_run": commit.get("neuronatlas_scores_run"),
                "inserted": metrics.get("num_target_rows_inserted"),
                "updated": metrics.get("num_target_rows_updated"),
                "rows": location.row_count(version),
            }
        )
    return rows


def export(root: str, out: str, version: int | None, fmt: str | None) -> tuple[int, int, str]:
    """Write one version (default: the latest) as one Parquet, JSONL or CSV file (format from
    `fmt` or the file's extension). Written next to `out` then renamed: never half a file.
    Returns (version, rows, format)."""
    chosen = fmt or {".parquet": "parquet", ".jsonl": "jsonl", ".csv": "csv"}.get(Path(out).suffix.lower())
    if chosen not in EXPORT_FORMATS:
        raise InputError(f"--format {fmt or Path(out).suffix or '(none)'}: expected one of {', '.join(EXPORT_FORMATS)}")
    target = Path(out).expanduser()
    if target.is_dir():
        raise InputError(f"{out}: is a folder; name the file to write")
    if not target.parent.is_dir():
        raise InputError(f"{out}: folder {target.parent} does not exist")
    location = table(root)
    written = location.open(version).version()
    frame = pl.from_arrow(location.read(written, published.SCHEMA))
    assert isinstance(frame, pl.DataFrame)
    frame = frame.sort(list(published.KEY))
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        if chosen == "parquet":
            frame.write_parquet(temporary)
        elif chosen == "jsonl":
            frame.write_ndjson(temporary)
        else:
            frame.write_csv(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return written, frame.height, chosen


NEURON = re.compile(r"^(\d+):(\d+)$")


def lineage(root: str, version: int | None = None, neuron: str | None = None) -> dict[str, Any]:
    """The chain from a published version (or one row of it) back to the corpus: for each
    publish that wrote rows still in that version, its commit and the datasets it came from
    (scores, explanations, activations, corpus) with fingerprints, parameters, model checksum,
    prompt and code versions, Prefect flow-run ids and validation outcomes."""
    storage = Storage.open(root)
    location = DeltaLocation(storage, published.TABLE_PATH)
    chosen = location.open(version).version()
    frame = pl.from_arrow(location.read(chosen, published.SCHEMA))
    assert isinstance(frame, pl.DataFrame)
    if neuron is not None:
        match = NEURON.match(neuron.strip())
        if not match:
            raise InputError(f"--neuron {neuron}: expected LAYER:NEURON, e.g. 5:123")
        layer, index = int(match[1]), int(match[2])
        frame = frame.filter((pl.col("layer") == layer) & (pl.col("neuron") == index))
        if frame.is_empty():
            raise InputError(f"--neuron {neuron}: not in version {chosen} of {location.uri}")
    commits = {c.get(PUBLISH_KEY): c for c in location.history() if c.get(PUBLISH_KEY)}
    publishes = []
    for publish_id in sorted(frame["publish_id"].unique().to_list()):
        rows = frame.filter(pl.col("publish_id") == publish_id)
        scores_run = rows["scores_run"][0]
        commit = commits.get(publish_id, {})
        publishes.append(
            {
                "publish_id": publish_id,
                "table_version": commit.get("version"),
                "committed_at": commit.get("timestamp")
                and datetime.fromtimestamp(commit["timestamp"] / 1000, UTC).isoformat(timespec="seconds"),
                "rows_in_this_version": rows.height,
                "prefect_flow_run_id": rows["prefect_flow_run_id"][0],
                "code_version": rows["code_version"][0],
                "prompt_version": rows["prompt_version"][0],
                "chain": [link.summary() for link in lineage_chain(storage, scores_run)],
            }
        )
    result: dict[str, Any] = {"table": location.uri, "version": chosen, "publishes": publishes}
    if neuron is not None:
        result["rows"] = frame.drop("published_at").to_dicts()
    return result


def runs(root: str) -> list[dict[str, Any]]:
    """Every atlas run's report under the root, newest first."""
    storage = Storage.open(root)
    reports = [storage.read_json(f"{RUNS}/{name}") for name in storage.list(RUNS) if name.endswith(".json")]
    return sorted(reports, key=lambda r: r.get("started_at", ""), reverse=True)


def published_before(location: DeltaLocation, publish_id: str) -> int | None:
    """The version a publish made, unless it was rolled back (None: not published)."""
    if not location.exists():
        return None
    history = location.history()
    if any(commit.get(ROLLED_BACK_KEY) == publish_id for commit in history):
        return None
    return next((int(c["version"]) for c in history if c.get(PUBLISH_KEY) == publish_id), None)
