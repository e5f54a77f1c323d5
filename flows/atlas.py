"""`atlas`: the end-to-end flow: ingest -> extract -> explain -> simulate and score -> publish.

Each stage is its own flow (a subflow here) and skips work already done for the same inputs, so
a nightly run over unchanged inputs costs seconds and publishes nothing new. The run writes
`runs/<run>.json` as it goes (its resolved config, status, per-stage wall time and outputs,
neurons done and failed, the scores' summary, LLM tokens and cost): `neuronatlas runs` lists
them, and `neuronatlas run --config runs/<run>.json` runs the same again.
"""

import gc
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from neuronatlas.adapters.data_docs import ValidationEntry, build_data_docs, docs_folder
from neuronatlas.adapters.runners import Runner, check_runner, cluster_for, on_runner
from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.lineage import lineage_chain, validation_entries
from neuronatlas.config import (
    AtlasConfig,
    LLMOptions,
    atlas_flat_defaults,
    atlas_from_flat,
    atlas_parameters,
    overlay,
    with_signature,
)
from neuronatlas.core.summary import llm_totals
from neuronatlas.datasets import published
from neuronatlas.datasets.runs import RunReport, new_run_id
from neuronatlas.errors import AtlasError
from neuronatlas.flows.explain import ExplainResult, explain_neurons
from neuronatlas.flows.extract import ExtractResult, extract_activations
from neuronatlas.flows.ingest import ingest_corpus
from neuronatlas.flows.publish import publish
from neuronatlas.flows.score import ScoreResult, simulate_and_score
from neuronatlas.plans import check_atlas


@dataclass(frozen=True)
class AtlasResult:
    run_id: str
    status: str
    table_uri: str | None
    version: int | None
    plots: list[str]
    data_docs: str
    report_uri: str


@flow(name="atlas", log_prints=False)
@with_signature(atlas_parameters())
def atlas(
    root: str = "./atlas",
    config: AtlasConfig | None = None,
    options: LLMOptions | None = None,
    explainer_backend: Any = None,
    simulator_backend: Any = None,
    plan: Any = None,
    **parameters: Any,
) -> AtlasResult:
    """The whole pipeline on one root, described by `config` or by the flat `parameters` (each
    stage's settings, `AtlasConfig`'s defaults where not given; `options` the LLM settings);
    `plan`: the ingest stage's, checked by the caller; `*_backend` (LLM backend objects) replace
    the named models in tests."""
    config = _resolve(config, options, parameters)
    if plan is None:  # a deployment's run, or a caller that did not check: every check first
        plan = check_atlas(root, config)
    storage = plan.storage
    runner = check_runner(config.runner)
    run_id = new_run_id()
    backends = {
        name: getattr(b, "id", "backend")
        for name, b in (("explainer", explainer_backend), ("simulator", simulator_backend))
        if b is not None
    }
    report = RunReport(storage, run_id, config.model_dump(), backends, str(flow_run.get_id() or "") or None)
    get_run_logger().info("atlas run %s: %s", run_id, storage.uri(report.path))
    try:
        with cluster_for(runner) as active:
            stages = Stages(storage, report, root, active, config, (explainer_backend, simulator_backend))
            corpus_id = stages.ingest(plan)
            extracted = stages.extract(corpus_id)
            explained = stages.explain(extracted.run_id)
            scored = stages.score(explained)
            return stages.finish(extracted, scored)
    except BaseException as error:
        reason = str(error) if isinstance(error, AtlasError) else traceback.format_exception_only(error)[-1].strip()
        report.finish("failed", error=reason)
        raise


def _resolve(config: AtlasConfig | None, options: LLMOptions | None, parameters: dict[str, Any]) -> AtlasConfig:
    """The run's config: built from the flat parameters, or `config` with the flat parameters that
    differ from their defaults (and `options`) laid over it."""
    if config is None:
        return atlas_from_flat({**parameters, "options": options})
    if not isinstance(config, AtlasConfig):  # a deployment's or the API's JSON
        config = AtlasConfig.of(dict(config))
    defaults = atlas_flat_defaults()
    changes = {name: value for name, value in parameters.items() if value != defaults.get(name)}
    return overlay(config, changes, options.model_dump(exclude_unset=True) if options else None)


@dataclass
class Stages:
    """The atlas's stages, each a subflow timed into the run report."""

    storage: Storage
    report: RunReport
    root: str
    runner: Runner
    config: AtlasConfig
    backends: tuple[Any, Any]
    """(explainer, simulator) backend objects replacing the named models (tests), or None."""

    def ingest(self, plan: Any) -> str:
        started = time.perf_counter()
        settings = {"plan": plan} if plan is not None else self.config.ingest.model_dump()
        ingested = ingest_corpus(root=self.root, **settings)
        self.report.stage(
            "ingest", time.perf_counter() - started, corpus_id=ingested.corpus_id, created=ingested.created
        )
        return ingested.corpus_id

    def extract(self, corpus_id: str) -> ExtractResult:
        started = time.perf_counter()
        settings = {**self.config.extract.model_dump(), "corpus": corpus_id}
        extracted = on_runner(extract_activations, self.runner)(root=self.root, runner=str(self.runner), **settings)
        self.report.stage(
            "extract",
            time.perf_counter() - started,
            run_id=extracted.run_id,
            layers=len(extracted.layers),
            layers_extracted=len(extracted.layers_extracted),
            plot=extracted.plot_uri,
        )
        return extracted

    def explain(self, activations: str) -> ExplainResult:
        started = time.perf_counter()
        explained = on_runner(explain_neurons, self.runner)(
            root=self.root,
            options=self.config.llm,
            backend=self.backends[0],
            runner=str(self.runner),
            **{**self.config.explain.model_dump(), "activations": activations},
        )
        gc.collect()  # the explainer's weights go before the simulator's load: never two at once
        self.report.stage(
            "explain",
            time.perf_counter() - started,
            run_id=explained.run_id,
            explained=explained.explained,
            failed=explained.failed,
            llm=explained.llm_usage,
        )
        return explained

    def score(self, explained: ExplainResult) -> ScoreResult:
        started = time.perf_counter()
        scored = on_runner(simulate_and_score, self.runner)(
            root=self.root,
            options=self.config.llm.after(explained.llm_usage),  # one budget for the whole run
            backend=self.backends[1],
            runner=str(self.runner),
            **{**self.config.score.model_dump(), "explanations": explained.run_id},
        )
        gc.collect()
        self.report.stage(
            "score",
            time.perf_counter() - started,
            run_id=scored.run_id,
            scored=scored.summary["scored"],
            failed=scored.summary["failed"],
            summary=scored.summary,
            plot=scored.plot_uri,
            llm=scored.llm_usage,
        )
        return scored

    def finish(self, extracted: ExtractResult, scored: ScoreResult) -> AtlasResult:
        """Publish (unless told not to), build the Data Docs, and close the run report."""
        storage, report = self.storage, self.report
        table_uri = version = None
        entries = validation_entries(storage, lineage_chain(storage, scored.run_id))
        if self.config.publish:
            started = time.perf_counter()
            published = publish(root=self.root, scores=scored.run_id)
            report.stage("publish", time.perf_counter() - started, **asdict(published))
            table_uri, version = published.table_uri, published.version
            entries += _publish_validations(storage, published.publish_id)
        started = time.perf_counter()
        folder = docs_folder(entries)
        if storage.exists(f"{folder}/index.html"):  # an earlier run had these very results
            docs = storage.uri(f"{folder}/index.html")
        else:
            docs = build_data_docs(storage, folder, entries)
        failed = sum(not entry.result["success"] for entry in entries)
        report.stage("data_docs", time.perf_counter() - started, uri=docs, validations=len(entries), failed=failed)
        plots = [extracted.plot_uri, *[uri for uri in (scored.layer_plot_uri, scored.plot_uri) if uri]]
        report.finish(
            "completed",
            neurons=scored.summary["neurons"],
            neurons_failed=scored.summary["neurons_without_score"],
            llm=llm_totals(report.record["stages"]),
            table=table_uri,
            version=version,
            plots=plots,
            data_docs=docs,
        )
        run_id = report.record["run_id"]
        get_run_logger().info("atlas run %s completed: table %s (version %s)", run_id, table_uri, version)
        return AtlasResult(run_id, "completed", table_uri, version, plots, docs, storage.uri(report.path))


def _publish_validations(storage: Storage, publish_id: str) -> list[ValidationEntry]:
    """The publish's two suite results (the rows offered, the table after the MERGE)."""
    record = storage.read_json(f"{published.PUBLISHES}/{publish_id}.json")
    return [
        ValidationEntry("published", f"{publish_id} {name}", report["ge_result"])
        for name, report in record["validation"].items()
        if report.get("ge_result")
    ]
