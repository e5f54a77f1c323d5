"""Tasks of the `publish` flow: one MERGE into the Delta table (restored on rollback), and the
table's suite on the version it made."""

from typing import Any

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction

from neuronatlas.adapters.delta import DeltaLocation
from neuronatlas.adapters.validation import ValidationReport, run_suite
from neuronatlas.datasets import published
from neuronatlas.errors import ValidationFailedError
from neuronatlas.expectations.published import published_frame, published_suite


@task(cache_policy=NO_CACHE)
def merge_rows(location: DeltaLocation, rows: pa.Table, metadata: dict[str, str]) -> dict[str, Any] | None:
    """One MERGE: a new table version (None: a concurrent publish of the same run made it)."""
    return location.merge(rows, published.KEY, published.REPLACE_WHEN, metadata, once=published.PUBLISH_KEY)


@merge_rows.on_rollback
def _revert_merge(txn: Transaction) -> None:
    """Undo this publish's MERGE alone: publishers that committed since keep their rows."""
    location: DeltaLocation = txn.get("location")
    version: int | None = txn.get("version", None)
    if version is None:  # the MERGE itself failed: nothing was committed
        return
    publish_id = txn.get("publish_id")
    owner = ("publish_id", publish_id)
    reverted = location.revert(version, published.KEY, owner, published.SCHEMA, {published.ROLLED_BACK_KEY: publish_id})
    made = "nothing to undo" if reverted is None else f"version {reverted} undoes version {version}"
    get_run_logger().warning("publish %s rolled back: %s (%s)", publish_id, location.uri, made)


@task(cache_policy=NO_CACHE)
def validate_version(location: DeltaLocation, version: int) -> ValidationReport:
    """The whole table as the new version reads back, against the published suite."""
    report = run_suite("published", published_frame(location.read(version, published.SCHEMA)), published_suite())
    if not report.success:
        raise ValidationFailedError(f"{location.uri} version {version}", report.failed())
    return report
