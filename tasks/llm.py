"""Tasks of the LLM stages (explain, score): reading neurons' records with their tokens; the
Batch API's collect-then-submit pass."""

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.records import Corpora, neuron_records, records_with_partners
from neuronatlas.catalog.runs import ActivationRun
from neuronatlas.core.explain import NeuronRecords
from neuronatlas.errors import AtlasError


class BatchPendingError(AtlasError):
    """A Batch API batch did not finish within --max-wait-seconds; nothing was committed."""


@task(cache_policy=NO_CACHE)
def load_records(
    storage: Storage,
    run: ActivationRun,
    layer: int,
    neurons: list[int],
    sign: str,
    corpora: Corpora,
    partner: dict[tuple[int, int], tuple[int, int]] | None = None,
) -> list[NeuronRecords]:
    """Top and random records of `neurons` of one layer, with their tokens, and (with `partner`)
    those of each one's permutation-control partner, wherever it is (see `catalog.records`)."""
    if partner is None:
        return neuron_records(storage, run, layer, neurons, sign, corpora)
    return records_with_partners(storage, run, layer, neurons, sign, corpora, partner)


def prefetch_batch(llm: Any, dry_run: Callable[[], object], logger: Any) -> None:
    """Batch API (`--batch-api`): run the stage once with every request the cache cannot answer
    recorded instead of sent, send them all as one batch (or resume the stored batch that holds
    them) and wait, so that the stage's real pass finds every answer. A batch still running at
    `--max-wait-seconds` stops the stage before it commits anything; a rerun resumes it."""
    backend = llm.backend
    if not getattr(backend, "batch", False):
        return
    counts = (llm.hits, llm.misses)
    with backend.collecting():
        dry_run()
    llm.hits, llm.misses = counts  # the real pass counts them
    logger.info("batch API: %d requests to answer", len(backend.pending))
    running = backend.flush()
    if running:
        raise BatchPendingError(
            f"batch {', '.join(running)} still running after --max-wait-seconds {backend.max_wait_s:g}; nothing "
            "committed; rerun the same command to resume it"
        )


def shared_budget_name() -> str:
    """A fresh name for the budget one stage's Dask workers share (`--budget-tokens/-usd` hold
    for the stage, not for each worker)."""
    import uuid

    return f"neuronatlas-budget-{uuid.uuid4().hex}"
