"""Tasks of the `ingest_corpus` flow."""

import time
from dataclasses import asdict
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction

from neuronatlas.adapters.models import Tokenizer, open_tokenizer
from neuronatlas.adapters.progress import progress
from neuronatlas.adapters.sources import LoadedSource, SourceSpec, read_source
from neuronatlas.adapters.storage import Storage
from neuronatlas.adapters.validation import ValidationReport, run_suite
from neuronatlas.core.corpus import CorpusStats, build_windows
from neuronatlas.datasets import corpus as contract
from neuronatlas.errors import InputError, ValidationFailedError
from neuronatlas.expectations import corpus as corpus_suite

# Inputs are large in-memory objects (documents, tables): no task-level result caching; the
# corpus itself is content-addressed, so a repeated ingest is skipped by the flow instead.


@task(cache_policy=NO_CACHE)
def read_source_task(spec: SourceSpec) -> LoadedSource:
    loaded = read_source(spec)
    get_run_logger().info("read %d documents from %s (%s)", len(loaded.documents), spec.source, loaded.kind)
    return loaded


@task(cache_policy=NO_CACHE)
def load_tokenizer_task(model: str) -> Tokenizer:
    tokenizer = open_tokenizer(model)
    get_run_logger().info("tokenizer of %s: %d tokens", model, tokenizer.vocab_size)
    return tokenizer


@task(cache_policy=NO_CACHE)
def tokenize_task(loaded: LoadedSource, tokenizer: Tokenizer, window: int) -> tuple[Any, CorpusStats]:
    """Windows of the unique documents, as a table in the corpus contract's schema."""
    logger = get_run_logger()
    with progress("tokenising", len(loaded.documents), logger, unit="documents") as update:
        windows, stats = build_windows(
            loaded.documents, tokenizer.encode, tokenizer.token_strings, window, on_batch=update
        )
    if not windows:
        raise InputError(
            f"--source {loaded.label}: no document is at least {window} tokens long "
            f"({stats.documents_used + stats.documents_too_short} usable documents); lower --window"
        )
    logger.info(
        "%d windows of %d tokens from %d documents (%d duplicates, %d too short, %d tail tokens dropped)",
        stats.windows,
        window,
        stats.documents_used,
        stats.documents_duplicate,
        stats.documents_too_short,
        stats.tokens_dropped,
    )
    return contract.to_table(windows, loaded.label), stats


@task(cache_policy=NO_CACHE)
def stage_corpus(storage: Storage, corpus_id: str, table: Any) -> str:
    """Write the corpus parts to a staging folder; the transaction discards it on failure."""
    staging = storage.new_staging(contract.corpus_path(corpus_id))
    for name, part in contract.parts(table):
        storage.write_parquet(f"{staging}/{name}", part)
    return staging


@stage_corpus.on_rollback
def _discard_staged_corpus(transaction: Transaction) -> None:
    storage: Storage = transaction.get("storage")
    storage.discard_staging(transaction.get("dataset"))


@task(cache_policy=NO_CACHE)
def validate_corpus(storage: Storage, staging: str, window: int, vocab_size: int) -> ValidationReport:
    """Run the corpus suite on the staged files as written; raise if any expectation fails."""
    table = storage.read_parquet(staging, schema=contract.SCHEMA)
    report = run_suite("corpus", corpus_suite.validation_frame(table), corpus_suite.suite(window, vocab_size))
    if not report.success:
        raise ValidationFailedError(f"corpus {storage.uri(staging)}", report.failed())
    return report


@task(cache_policy=NO_CACHE)
def commit_corpus(storage: Storage, staging: str, corpus_id: str, manifest: dict[str, Any]) -> str:
    dataset = contract.corpus_path(corpus_id)
    storage.commit(staging, dataset, manifest)
    get_run_logger().info("committed %s", storage.uri(dataset))
    return storage.uri(dataset)


def corpus_manifest(
    *,
    corpus_id: str,
    loaded: LoadedSource,
    tokenizer: Tokenizer,
    window: int,
    table: Any,
    stats: CorpusStats,
    report: ValidationReport,
    timings: dict[str, float],
    context: dict[str, Any],
) -> dict[str, Any]:
    """What the corpus is, where it came from, and how it was made."""
    return {
        "dataset": "corpus",
        "corpus_id": corpus_id,
        "format_version": contract.FORMAT_VERSION,
        "source": {"label": loaded.label, "kind": loaded.kind, "fingerprint": loaded.fingerprint, **loaded.details},
        "tokenizer": {
            "model": tokenizer.source.spec,
            "hf_id": tokenizer.source.hf_id,
            "identity": tokenizer.identity,
            "vocab_size": tokenizer.vocab_size,
            "fingerprint": tokenizer.fingerprint,
        },
        "window": window,
        "rows": table.num_rows,
        "tokens": table.num_rows * window,
        "counts": asdict(stats),
        "files": [name for name, _ in contract.parts(table)],
        "schema": table.schema.to_string(),
        "validation": report.to_manifest(),
        "timings_s": {name: round(seconds, 3) for name, seconds in timings.items()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **context,
    }
