"""`publish`: a score run -> a new version of the Delta table `published/atlas`.

Only after every upstream suite passed (corpus, the activation, explanation and score partitions
the run was made from). The rows are validated before the MERGE and the whole table after it, in
one Prefect transaction: a failure after the commit reverts that commit alone (its rows back to
what the version before held; publishers that committed since keep theirs), so a table that
failed its suite does not stay the latest version. A score run publishes once; a
rerun finds its publish in the table's history and does nothing.
"""

from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.transactions import transaction

from neuronatlas.adapters.delta import DeltaLocation
from neuronatlas.adapters.storage import Storage
from neuronatlas.adapters.validation import run_suite
from neuronatlas.catalog.lineage import check_upstream, lineage_chain
from neuronatlas.catalog.published import published_before
from neuronatlas.catalog.runs import committed_run
from neuronatlas.datasets import explanations as contract
from neuronatlas.datasets import published
from neuronatlas.errors import InputError, ValidationFailedError
from neuronatlas.expectations.published import published_frame, published_suite
from neuronatlas.tasks.publish import merge_rows, validate_version
from neuronatlas.version import code_version


@dataclass(frozen=True)
class PublishResult:
    publish_id: str
    table_uri: str
    version: int
    rows: int
    """Rows this publish offered to the table."""
    inserted: int
    updated: int
    skipped: bool
    """True when this score run was published before: nothing was written."""


@flow(name="publish", log_prints=False)
def publish(root: str = "./atlas", scores: str | None = None) -> PublishResult:
    """Publish a committed score run's best explanation per neuron to `published/atlas`."""
    logger = get_run_logger()
    storage = Storage.open(root)
    storage.check_writable()
    scores_run = committed_run(storage, "scores", scores, "score")
    publish_id = published.publish_id(scores_run)
    location = DeltaLocation(storage, published.TABLE_PATH)
    record_path = f"{published.PUBLISHES}/{publish_id}.json"
    earlier = published_before(location, publish_id)
    if earlier is not None and storage.exists(record_path):
        logger.info("%s was published before (version %d of %s): nothing to do", scores_run, earlier, location.uri)
        return PublishResult(publish_id, location.uri, location.open().version(), 0, 0, 0, True)
    chain = lineage_chain(storage, scores_run)
    check_upstream(chain)
    flow_run_id = str(flow_run.get_id() or "") or None
    table = storage.read_parquet(contract.scores_path(scores_run), schema=contract.SCORES_SCHEMA)
    rows = published.published_rows(chain, table, publish_id, flow_run_id)
    if rows.num_rows == 0:
        raise InputError(f"scores run {scores_run}: no neuron has a ranked explanation; nothing to publish")
    staged = run_suite("published rows", published_frame(rows), published_suite())
    if not staged.success:
        raise ValidationFailedError(f"{scores_run}: rows to publish", staged.failed())
    if earlier is not None:  # committed by a publish that stopped (or has yet to get) to its record
        logger.warning("%s: version %d has no publish record; checking it and writing the record", scores_run, earlier)
        metrics, flow_run_id = _commit_metrics(location, earlier)
        report = validate_version(location, earlier)
    else:
        metadata = {
            published.PUBLISH_KEY: publish_id,
            "neuronatlas_scores_run": scores_run,
            "neuronatlas_code_version": code_version(),
            "neuronatlas_flow_run_id": flow_run_id or "",
        }
        location.create(published.SCHEMA, {"neuronatlas_format_version": str(published.FORMAT_VERSION)})
        with transaction() as txn:
            txn.set("location", location)
            txn.set("publish_id", publish_id)
            merged = merge_rows(location, rows, metadata)
            if merged is None:
                version = published_before(location, publish_id)
                logger.info("%s was published by a concurrent run: version %s", scores_run, version)
                return PublishResult(publish_id, location.uri, location.open().version(), 0, 0, 0, True)
            metrics = merged
            txn.set("version", metrics["version"])
            report = validate_version(location, metrics["version"])
    inserted, updated = metrics["num_target_rows_inserted"], metrics["num_target_rows_updated"]
    record = published.publish_record(publish_id, location.uri, metrics["version"], rows.num_rows, inserted, updated)
    record |= {
        "validation": {"rows": staged.to_manifest(), "table": report.to_manifest()},
        "lineage": [link.summary() for link in chain],
        "code_version": code_version(),
        "prefect_flow_run_id": flow_run_id,
    }
    storage.write_json(record_path, record)
    logger.info(
        "published %s as version %d of %s: %d rows offered, %d new, %d improved",
        *(scores_run, metrics["version"], location.uri, rows.num_rows, inserted, updated),
    )
    return PublishResult(publish_id, location.uri, metrics["version"], rows.num_rows, inserted, updated, False)


def _commit_metrics(location: DeltaLocation, version: int) -> tuple[dict[str, Any], str | None]:
    """A committed MERGE's version and row counts, and the flow run that made it, from the
    table's history: the record says what the commit did, whoever writes it."""
    [commit] = [c for c in location.history() if int(c["version"]) == version]
    metrics = commit.get("operationMetrics") or {}
    counts = {
        "version": version,
        "num_target_rows_inserted": int(metrics.get("num_target_rows_inserted", 0)),
        "num_target_rows_updated": int(metrics.get("num_target_rows_updated", 0)),
    }
    return counts, commit.get("neuronatlas_flow_run_id") or None
