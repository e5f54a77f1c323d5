"""Tasks of the `explain_neurons` flow: explain one layer's neurons (read the records ->
`core.explain` -> the contract's table -> commit), in the flow's process or on a Dask worker with
an explainer of its own."""

from collections import Counter
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from neuronatlas.adapters.llm import make_backend
from neuronatlas.adapters.llm_cache import CachedBackend, UsageReport
from neuronatlas.adapters.runners import worker_name
from neuronatlas.catalog.records import Corpora
from neuronatlas.config import LLMOptions
from neuronatlas.core.explain import ExplainedNeuron, explain_records
from neuronatlas.core.llm import GenerationParams, LLMBackend
from neuronatlas.datasets import explanations as contract
from neuronatlas.expectations import explanations as suites
from neuronatlas.plans import ExplainPlan
from neuronatlas.tasks.commit import commit_layer
from neuronatlas.tasks.llm import load_records


@dataclass(frozen=True)
class LayerWork:
    """What explaining one layer needs, in the flow's process or on a Dask worker."""

    plan: ExplainPlan
    path: str
    params: GenerationParams
    context: dict[str, Any]
    corpora: Corpora
    """The corpus tokens, read once for every layer."""

    def explain(self, layer: int, llm: LLMBackend, on_chunk: Any) -> list[ExplainedNeuron]:
        """The layer's neurons explained (nothing written)."""
        plan, config = self.plan, self.plan.config
        records = load_records(plan.storage, plan.run, layer, plan.of_layer(layer), config.sign, self.corpora)
        return explain_records(llm, records, self.params, config.prompt_format, config.scale, on_chunk)

    def run(self, layer: int, llm: LLMBackend, on_chunk: Any) -> None:
        """Explain the layer's neurons and commit its partition."""
        plan, config = self.plan, self.plan.config
        explained = self.explain(layer, llm, on_chunk)
        table = contract.explanations_table(layer, explained)
        failures = Counter(reason for reason in table["failure_reason"].to_pylist() if reason)
        context = {
            **self.context,
            "retryable_failures": sum(neuron.retryable for neuron in explained),
            "worker": worker_name(),
            "rows": table.num_rows,
            "failures": dict(failures),
        }
        checks = suites.explanation_checks(plan.run.d_mlp, config.samples)
        tables = {"explanations": (self.path, table)}
        commit_layer(plan.storage, layer, tables, checks, f"layer {layer} explanations", context)


@task(cache_policy=NO_CACHE)
def explain_layer_task(
    work: LayerWork, layer: int, explainer: str, options: LLMOptions, budget: str | None = None
) -> UsageReport:
    """One layer's neurons on a Dask worker, with an explainer of its own that spends from the
    stage's shared `budget`; returns what it spent."""
    storage = work.plan.storage
    llm = CachedBackend(make_backend(explainer, "--explainer", options, storage, budget), storage)
    try:
        work.run(layer, llm, lambda _: None)
    finally:
        llm.release()
    return llm.report()
