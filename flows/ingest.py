"""`ingest_corpus`: a corpus source -> the validated, committed corpus dataset."""

import time
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.transactions import transaction

from neuronatlas.adapters.models import DEFAULT_MODEL, resolve_model
from neuronatlas.adapters.sources import EncodingErrors, SourceSpec, check_source
from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import corpus as contract
from neuronatlas.errors import InputError
from neuronatlas.tasks.ingest import (
    commit_corpus,
    corpus_manifest,
    load_tokenizer_task,
    read_source_task,
    stage_corpus,
    tokenize_task,
    validate_corpus,
)
from neuronatlas.version import code_version

DEFAULT_SOURCE = "wiki-vital-en"
DEFAULT_ROOT = "./atlas"
DEFAULT_WINDOW = 64


@dataclass(frozen=True)
class IngestResult:
    """What an ingest produced (or found already there)."""

    corpus_id: str
    uri: str
    rows: int
    tokens: int
    created: bool
    """False when the same corpus was already committed and nothing was written."""


@flow(name="ingest_corpus", log_prints=False)
def ingest_corpus(
    source: str = DEFAULT_SOURCE,
    root: str = DEFAULT_ROOT,
    tokenizer_of: str = DEFAULT_MODEL,
    window: int = DEFAULT_WINDOW,
    text_field: str = "text",
    id_field: str | None = None,
    split: str | None = None,
    encoding_errors: EncodingErrors = "strict",
) -> IngestResult:
    """Read a source, tokenise it into fixed windows, validate, and commit it under `root`."""
    logger = get_run_logger()
    started = time.perf_counter()
    spec = SourceSpec(source, text_field, id_field, split, encoding_errors)
    storage = check_ingest_inputs(spec, root, tokenizer_of, window)
    loaded = read_source_task(spec)
    tokenizer = load_tokenizer_task(tokenizer_of)
    read_done = time.perf_counter()
    corpus_id = contract.corpus_id(loaded.label, loaded.fingerprint, tokenizer.source.slug, tokenizer.identity, window)
    dataset = contract.corpus_path(corpus_id)
    if storage.is_committed(dataset):
        manifest = storage.manifest(dataset)
        logger.info("corpus %s already ingested: nothing written", corpus_id)
        return IngestResult(corpus_id, storage.uri(dataset), manifest["rows"], manifest["tokens"], created=False)

    table, stats = tokenize_task(loaded, tokenizer, window)
    tokenized = time.perf_counter()
    with transaction() as txn:
        txn.set("storage", storage)
        txn.set("dataset", dataset)
        staging = stage_corpus(storage, corpus_id, table)
        staged = time.perf_counter()
        report = validate_corpus(storage, staging, window, tokenizer.vocab_size)
        validated = time.perf_counter()
        timings = {
            "read_source_and_tokenizer": read_done - started,
            "tokenize": tokenized - read_done,
            "write_staging": staged - tokenized,
            "validate": validated - staged,
            "total_before_commit": validated - started,
        }
        manifest = corpus_manifest(
            corpus_id=corpus_id,
            loaded=loaded,
            tokenizer=tokenizer,
            window=window,
            table=table,
            stats=stats,
            report=report,
            timings=timings,
            context=_lineage_context(),
        )
        uri = commit_corpus(storage, staging, corpus_id, manifest)
    return IngestResult(corpus_id, uri, table.num_rows, table.num_rows * window, created=True)


def check_ingest_inputs(spec: SourceSpec, root: str, tokenizer_of: str, window: int) -> Storage:
    """Every check that needs no full read: run first by the flow, and by the CLI before it
    starts Prefect, so most bad input fails in a second with one line."""
    if window < 2:
        raise InputError(f"--window {window}: must be at least 2 tokens")
    if spec.encoding_errors not in ("strict", "replace"):
        raise InputError(f"--encoding-errors {spec.encoding_errors}: expected strict or replace")
    check_source(spec)
    resolve_model(tokenizer_of)
    return Storage.open(root)


def _lineage_context() -> dict[str, Any]:
    return {"code_version": code_version(), "prefect_flow_run_id": str(flow_run.get_id() or "")}
