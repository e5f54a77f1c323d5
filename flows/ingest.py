"""`ingest_corpus`: a corpus source -> the validated, committed corpus dataset."""

import time
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from neuronatlas.config import IngestConfig, parameters, with_signature
from neuronatlas.datasets import corpus as contract
from neuronatlas.expectations import corpus as corpus_suite
from neuronatlas.plans import plan_ingest, source_spec
from neuronatlas.tasks.commit import DatasetWrite, commit_datasets
from neuronatlas.tasks.ingest import load_tokenizer_task, read_source_task, tokenize_task
from neuronatlas.version import code_version

DEFAULT_ROOT = "./atlas"


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
@with_signature(parameters(IngestConfig))
def ingest_corpus(root: str = DEFAULT_ROOT, plan: Any = None, **settings: Any) -> IngestResult:
    """Read a source, tokenise it into fixed windows, validate, and commit it under `root`
    (`settings`: the fields of `IngestConfig`; `plan`: the same, checked by the caller)."""
    logger = get_run_logger()
    started = time.perf_counter()
    plan = plan or plan_ingest(root, IngestConfig.of(settings))
    config, storage = plan.config, plan.storage
    loaded = read_source_task(source_spec(config))
    tokenizer = load_tokenizer_task(config.tokenizer_of)
    read_done = time.perf_counter()
    corpus_id = contract.corpus_id(
        loaded.label, loaded.fingerprint, tokenizer.source.slug, tokenizer.identity, config.window
    )
    dataset = contract.corpus_path(corpus_id)
    if storage.is_committed(dataset):
        committed = storage.manifest(dataset)
        logger.info("corpus %s already ingested: nothing written", corpus_id)
        return IngestResult(corpus_id, storage.uri(dataset), committed["rows"], committed["tokens"], created=False)

    table, stats = tokenize_task(loaded, tokenizer, config.window)
    tokenized = time.perf_counter()
    lineage = {"code_version": code_version(), "prefect_flow_run_id": str(flow_run.get_id() or "")}

    def manifest(reports: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
        timings = {
            "read_source_and_tokenizer": read_done - started,
            "tokenize": tokenized - read_done,
            **timings,
            "total_before_commit": time.perf_counter() - started,
        }
        return contract.corpus_manifest(
            corpus_id, loaded, tokenizer, config.window, table, stats, reports["corpus"], timings, lineage
        )

    check = corpus_suite.check(config.window, tokenizer.vocab_size)
    write = DatasetWrite("corpus", dataset, contract.parts(table), contract.SCHEMA, check)
    commit_datasets(storage, [write], f"corpus {storage.uri(dataset)}", manifest)
    return IngestResult(corpus_id, storage.uri(dataset), table.num_rows, table.num_rows * config.window, created=True)
