"""Tasks of the LLM stages (explain, score): reading neurons' records with their tokens."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.records import Corpora, neuron_records, records_with_partners
from neuronatlas.catalog.runs import ActivationRun
from neuronatlas.core.explain import NeuronRecords


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
