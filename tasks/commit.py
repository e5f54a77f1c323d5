"""The one way a stage commits data: stage -> validate -> commit, in one Prefect transaction.

Every dataset (or layer partition) is written to its own staging folder, read back as written and
validated by its Great Expectations suite; only when every suite passed are they committed, in
the given order (the last commit marks the unit of work done). A failed suite or any error rolls
the transaction back: the staging folders are discarded and nothing is committed.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, transaction

from neuronatlas.adapters.storage import Storage
from neuronatlas.adapters.validation import Check, ValidationReport, run_suite
from neuronatlas.errors import ValidationFailedError


@dataclass(frozen=True)
class DatasetWrite:
    """One dataset or partition to commit."""

    name: str
    """Its key in the manifest (`records`, `stats`, `scores`...)."""
    path: str
    """Where it is committed, relative to the root."""
    parts: Sequence[tuple[str, pa.Table]]
    """(file name, table) of each Parquet file."""
    schema: pa.Schema
    check: Check


Manifest = Callable[[dict[str, ValidationReport], dict[str, float]], dict[str, Any]]
"""(suite reports by dataset name, staging and validation seconds) -> the manifest to commit."""


def commit_datasets(
    storage: Storage, datasets: Sequence[DatasetWrite], what: str, manifest: Manifest, replace: bool = False
) -> dict[str, ValidationReport]:
    """Stage, validate and commit `datasets` as one unit; `replace` commits over a committed one
    (a rerun that retried failed rows), otherwise a committed one is refused. Raises
    `ValidationFailedError` naming every failed expectation of `what`."""
    with transaction() as txn:
        txn.set("storage", storage)
        txn.set("partitions", [dataset.path for dataset in datasets])
        started = time.perf_counter()
        staged = stage_datasets(storage, datasets)
        written = time.perf_counter()
        reports = validate_staged(storage, staged, datasets, what)
        timings = {"write_staging": written - started, "validate": time.perf_counter() - written}
        commit_staged(storage, staged, datasets, manifest(reports, timings), replace)
    return reports


@task(cache_policy=NO_CACHE)
def stage_datasets(storage: Storage, datasets: Sequence[DatasetWrite]) -> dict[str, str]:
    """Write each dataset's files to a fresh staging folder."""
    staged = {}
    for dataset in datasets:
        staged[dataset.name] = storage.new_staging(dataset.path)
        for name, table in dataset.parts:
            storage.write_parquet(f"{staged[dataset.name]}/{name}", table)
    return staged


@stage_datasets.on_rollback
def _discard_staged(transaction: Transaction) -> None:
    storage: Storage = transaction.get("storage")
    for partition in transaction.get("partitions"):
        storage.discard_staging(partition)


@task(cache_policy=NO_CACHE)
def validate_staged(
    storage: Storage, staged: dict[str, str], datasets: Sequence[DatasetWrite], what: str
) -> dict[str, ValidationReport]:
    """Each staged dataset, read back as written, against its suite; raise naming every failure."""
    reports = {}
    for dataset in datasets:
        table = storage.read_parquet(staged[dataset.name], schema=dataset.schema)
        reports[dataset.name] = run_suite(dataset.check.dataset, dataset.check.frame(table), dataset.check.suite)
    failed = [line for report in reports.values() for line in report.failed()]
    if failed:
        raise ValidationFailedError(what, failed)
    return reports


@task(cache_policy=NO_CACHE)
def commit_staged(
    storage: Storage, staged: dict[str, str], datasets: Sequence[DatasetWrite], manifest: dict, replace: bool
) -> None:
    """Commit in order, each with the manifest and its own name as `dataset`."""
    for dataset in datasets:
        commit = storage.replace if replace else storage.commit
        commit(staged[dataset.name], dataset.path, {**manifest, "dataset": dataset.name})
    get_run_logger().info("committed %s", ", ".join(storage.uri(dataset.path) for dataset in datasets))


def commit_layer(
    storage: Storage,
    layer: int,
    tables: dict[str, tuple[str, pa.Table]],
    checks: dict[str, Check],
    what: str,
    context: dict[str, Any],
) -> dict[str, ValidationReport]:
    """One layer of the LLM stages' datasets: `tables` maps a name to (dataset path, the layer's
    table), committed in order over any earlier commit of the layer (a rerun that retried its
    failed rows); every partition's manifest is `context` with the layer and the suites' results."""
    writes = [
        DatasetWrite(
            name,
            f"{path}/layer={layer}",
            [("part-00000.parquet", table)],
            table.schema,
            checks[name],
        )
        for name, (path, table) in tables.items()
    ]

    def manifest(reports: dict[str, ValidationReport], _: dict[str, float]) -> dict[str, Any]:
        return {
            **context,
            "layer": layer,
            "validation": {name: report.to_manifest() for name, report in reports.items()},
        }

    return commit_datasets(storage, writes, what, manifest, replace=True)
