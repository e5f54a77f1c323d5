"""Tasks of the `ingest_corpus` flow."""

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from neuronatlas.adapters.models import Tokenizer, open_tokenizer
from neuronatlas.adapters.progress import progress
from neuronatlas.adapters.sources import LoadedSource, SourceSpec, read_source
from neuronatlas.core.corpus import CorpusStats, build_windows
from neuronatlas.datasets import corpus as contract
from neuronatlas.errors import InputError

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
