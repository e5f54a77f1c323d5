"""Tasks of the `simulate_and_score` flow: score one layer's explanations with every chosen scorer
(read the records -> `core.scorers` -> the contract's tables -> commit), in the flow's process or
on a Dask worker with models of its own."""

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prefect import task
from prefect.cache_policies import NO_CACHE

from neuronatlas.adapters.embedding import Encoder
from neuronatlas.adapters.llm import make_backend
from neuronatlas.adapters.llm_cache import CachedBackend, UsageReport
from neuronatlas.adapters.runners import worker_name
from neuronatlas.catalog.records import Corpora
from neuronatlas.catalog.runs import ActivationRun
from neuronatlas.config import LLMOptions
from neuronatlas.core.llm import LLMBackend
from neuronatlas.core.scorers import Scorer, build_scorers, retryable_failures, score_neuron
from neuronatlas.core.scorers.base import NeuronOutcome
from neuronatlas.core.scorers.simulation import simulated_splits
from neuronatlas.datasets import explanations as contract
from neuronatlas.expectations import explanations as suites
from neuronatlas.plans import ScorePlan
from neuronatlas.tasks.commit import commit_layer
from neuronatlas.tasks.llm import load_records


def scorers_for(plan: ScorePlan, llm: LLMBackend, options: LLMOptions, encoder: bool = True) -> list[Scorer]:
    """The plan's scorers around this simulator (and an encoder on the LLM device; `encoder`
    False: the scorers that ask the LLM only)."""
    config = plan.config
    chosen = plan.scorers if encoder else tuple(name for name in plan.scorers if name != "embedding")
    splits = simulated_splits(config.splits)
    return build_scorers(
        chosen, llm, lambda: Encoder(options.device), plan.method, config.scale, config.placeholder, splits
    )


MAX_PARALLEL_NEURONS = 64
"""Neurons of a layer scored at once at most (threads that mostly wait on the LLM's answers)."""


@dataclass(frozen=True)
class ScoreWork:
    """What scoring one layer needs, in the flow's process or on a Dask worker."""

    plan: ScorePlan
    run_id: str
    activation_run: ActivationRun
    neurons: list[tuple[int, int]]
    partner: dict[tuple[int, int], tuple[int, int]]
    sign: str
    """The side that was explained."""
    explanations: pa.Table
    digests: dict[int, str]
    paths: dict[str, str]
    context: dict[str, Any]
    corpora: Corpora
    """The corpus tokens, read once for every layer."""

    @property
    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.neurons})

    def of_layer(self, layer: int) -> list[int]:
        return [neuron for chosen_layer, neuron in self.neurons if chosen_layer == layer]

    def outcomes(self, layer: int, scorers: list[Scorer], on_neuron: Any, parallel: int = 1) -> list[NeuronOutcome]:
        """The layer's explanations scored by every scorer (nothing written); `parallel`: how many
        requests the LLM keeps in flight (an API backend's limit): that many neurons are scored at
        once, in threads, the backend's own limit bounding their requests; 1 (a model in
        process): one by one."""
        neurons = self.of_layer(layer)
        read = load_records(
            self.plan.storage, self.activation_run, layer, neurons, self.sign, self.corpora, self.partner
        )
        records = {(r.layer, r.neuron): r for r in read}
        rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
        table = self.explanations
        for row in table.filter(pc.equal(table["layer"], layer)).to_pylist():
            rows[row["neuron"]].append(row)

        def one(neuron: int) -> NeuronOutcome:
            partner = records.get(self.partner.get((layer, neuron), (-1, -1)))
            return score_neuron(scorers, records[(layer, neuron)], rows[neuron], partner)

        workers = min(len(neurons), parallel, MAX_PARALLEL_NEURONS)
        if workers <= 1:
            outcomes = []
            for done, neuron in enumerate(neurons, start=1):
                outcomes.append(one(neuron))
                on_neuron(done)
            return outcomes
        with ThreadPoolExecutor(workers, thread_name_prefix="score-neuron") as pool:
            futures = [pool.submit(one, neuron) for neuron in neurons]
            for done, _ in enumerate(as_completed(futures), start=1):
                on_neuron(done)
            return [future.result() for future in futures]

    def run(self, layer: int, scorers: list[Scorer], on_neuron: Any, parallel: int = 1) -> None:
        """Score the layer's explanations with every scorer and commit its partitions."""
        outcomes = self.outcomes(layer, scorers, on_neuron, parallel)
        tables = contract.layer_tables(layer, outcomes)
        context = {
            **self.context,
            "retryable_failures": retryable_failures(outcomes),
            "explanations_digest": self.digests[layer],
            "worker": worker_name(),
            "rows": {name: table.num_rows for name, table in tables.items()},
        }
        written = {name: (self.paths[name], t) for name, t in tables.items() if t.num_rows or name == "scores"}
        checks = suites.score_checks(self.plan.config.scale, self.activation_run.d_mlp)
        commit_layer(self.plan.storage, layer, written, checks, f"layer {layer} scores", context)


@task(cache_policy=NO_CACHE)
def score_layer_task(work: ScoreWork, layer: int, options: LLMOptions, budget: str | None = None) -> UsageReport:
    """One layer's explanations on a Dask worker, with a simulator and encoder of its own; the
    simulator spends from the stage's shared `budget`."""
    storage = work.plan.storage
    llm = CachedBackend(make_backend(work.plan.config.simulator, "--simulator", options, storage, budget), storage)
    try:
        work.run(layer, scorers_for(work.plan, llm, options), lambda _: None, llm.parallel_requests)
    finally:
        llm.release()
    return llm.report()
