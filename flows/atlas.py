"""`atlas`: the end-to-end flow: ingest -> extract -> explain -> simulate and score -> publish.

Each stage is its own flow (a subflow here) and skips work already done for the same inputs, so
a nightly run over unchanged inputs costs seconds and publishes nothing new. The run writes
`runs/<run>.json` as it goes (status, per-stage wall time and outputs, neurons done and failed,
the scores' summary, LLM tokens and cost): `neuronatlas runs` lists them.
"""

import gc
import time
import traceback
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from neuronatlas.adapters.data_docs import ValidationEntry, build_data_docs
from neuronatlas.adapters.llm import BackendOptions
from neuronatlas.adapters.models import DEFAULT_MODEL
from neuronatlas.adapters.runners import Runner, check_runner, cluster_for, on_runner
from neuronatlas.adapters.storage import Storage
from neuronatlas.defaults import SCORERS as DEFAULT_SCORERS
from neuronatlas.errors import AtlasError
from neuronatlas.flows.explain import DEFAULT_EXPLAINER, ExplainResult, explain_neurons
from neuronatlas.flows.extract import ExtractResult, extract_activations
from neuronatlas.flows.ingest import DEFAULT_SOURCE, ingest_corpus
from neuronatlas.flows.publish import publish
from neuronatlas.flows.score import DEFAULT_SIMULATOR, ScoreResult, simulate_and_score
from neuronatlas.tasks.publish import lineage_chain, validation_entries
from neuronatlas.version import code_version

RUNS = "runs"
DEFAULT_LIMIT = 2048
"""Excerpts the default run extracts from: all 30 layers of SmolLM2-135M in about 4 minutes on 2 CPU cores."""
DEFAULT_NEURONS = "2"
"""Neurons the default run explains and scores: the whole default run fits in 15 minutes on 2 CPU cores."""


@dataclass(frozen=True)
class AtlasResult:
    run_id: str
    status: str
    table_uri: str | None
    version: int | None
    plots: list[str]
    data_docs: str
    report_uri: str


def new_run_id() -> str:
    return f"a-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


class RunReport:
    """`runs/<run>.json`, rewritten after every stage, so a crashed run still says how far it got."""

    def __init__(self, storage: Storage, run_id: str, parameters: dict[str, Any]) -> None:
        self.storage = storage
        self.path = f"{RUNS}/{run_id}.json"
        self.started = time.perf_counter()
        self.record: dict[str, Any] = {
            "run_id": run_id,
            "flow": "atlas",
            "status": "running",
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "parameters": parameters,
            "code_version": code_version(),
            "prefect_flow_run_id": str(flow_run.get_id() or "") or None,
            "stages": [],
        }
        self.write()

    def stage(self, name: str, seconds: float, **outputs: Any) -> None:
        self.record["stages"].append({"stage": name, "seconds": round(seconds, 1), **outputs})
        self.write()

    def finish(self, status: str, **fields: Any) -> None:
        self.record.update(status=status, wall_s=round(time.perf_counter() - self.started, 1), **fields)
        self.record["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.write()

    def write(self) -> None:
        self.storage.write_json(self.path, self.record)


@flow(name="atlas", log_prints=False)
def atlas(
    root: str = "./atlas",
    source: str = DEFAULT_SOURCE,
    model: str = DEFAULT_MODEL,
    limit: int | None = DEFAULT_LIMIT,
    extract_layers: str = "all",
    top_k: int = 20,
    random_k: int = 15,
    layers: str = "all",
    neurons: str = DEFAULT_NEURONS,
    samples: int = 1,
    prompt_format: str = "tokens",
    explainer: str = DEFAULT_EXPLAINER,
    simulator: str = DEFAULT_SIMULATOR,
    method: str = "auto",
    scorers: str = DEFAULT_SCORERS,
    seed: int = 0,
    publish_table: bool = True,
    runner: str = "local",
    options: BackendOptions | None = None,
    explainer_backend: Any = None,
    simulator_backend: Any = None,
) -> AtlasResult:
    """The whole pipeline on one root; `*_backend` (LLM backend objects) replace the named models in
    tests. `runner`: local, or dask[:ADDRESS] to run extraction shards and neuron batches on Dask."""
    logger = get_run_logger()
    storage = Storage.open(root)
    chosen_runner = check_runner(runner)
    run_id = new_run_id()
    parameters = {
        "source": source,
        "model": model,
        "limit": limit,
        "extract_layers": extract_layers,
        "top_k": top_k,
        "random_k": random_k,
        "layers": layers,
        "neurons": neurons,
        "samples": samples,
        "prompt_format": prompt_format,
        "explainer": explainer if explainer_backend is None else getattr(explainer_backend, "id", "backend"),
        "simulator": simulator if simulator_backend is None else getattr(simulator_backend, "id", "backend"),
        "method": method,
        "scorers": scorers,
        "seed": seed,
        "publish": publish_table,
        "runner": runner,
        "base_url": options.base_url if options else None,
    }
    report = RunReport(storage, run_id, parameters)
    logger.info("atlas run %s: %s", run_id, storage.uri(report.path))
    try:
        with cluster_for(chosen_runner) as active:
            stages = Stages(
                storage,
                report,
                root,
                active,
                options or BackendOptions(),
                {"model": model, "seed": seed},
                (explainer_backend, simulator_backend),
            )
            corpus_id = stages.ingest(source)
            extracted = stages.extract(corpus_id, extract_layers, top_k, random_k, limit)
            explained = stages.explain(extracted.run_id, layers, neurons, explainer, samples, prompt_format)
            scored = stages.score(explained, simulator, method, scorers)
            result = stages.finish(extracted, scored, publish_table)
    except BaseException as error:
        reason = str(error) if isinstance(error, AtlasError) else traceback.format_exception_only(error)[-1].strip()
        report.finish("failed", error=reason)
        raise
    return result


@dataclass
class Stages:
    """The atlas's stages, each a subflow timed into the run report."""

    storage: Storage
    report: RunReport
    root: str
    runner: Runner
    options: BackendOptions
    shared: dict[str, Any]
    """model and seed, the same for every stage."""
    backends: tuple[Any, Any]
    """(explainer, simulator) backend objects replacing the named models (tests), or None."""

    def ingest(self, source: str) -> str:
        started = time.perf_counter()
        ingested = ingest_corpus(source=source, root=self.root, tokenizer_of=self.shared["model"])
        self.report.stage(
            "ingest", time.perf_counter() - started, corpus_id=ingested.corpus_id, created=ingested.created
        )
        return ingested.corpus_id

    def extract(self, corpus_id: str, layers: str, top_k: int, random_k: int, limit: int | None) -> ExtractResult:
        started = time.perf_counter()
        extracted = on_runner(extract_activations, self.runner)(
            root=self.root,
            corpus=corpus_id,
            layers=layers,
            top_k=top_k,
            random_k=random_k,
            limit=limit,
            runner=str(self.runner),
            **self.shared,
        )
        self.report.stage(
            "extract",
            time.perf_counter() - started,
            run_id=extracted.run_id,
            layers=len(extracted.layers),
            layers_extracted=len(extracted.layers_extracted),
            plot=extracted.plot_uri,
        )
        return extracted

    def explain(
        self, activations: str, layers: str, neurons: str, explainer: str, samples: int, prompt_format: str
    ) -> ExplainResult:
        started = time.perf_counter()
        explained = on_runner(explain_neurons, self.runner)(
            root=self.root,
            activations=activations,
            layers=layers,
            neurons=neurons,
            explainer=explainer,
            samples=samples,
            prompt_format=prompt_format,
            seed=self.shared["seed"],
            options=self.options,
            backend=self.backends[0],
            runner=str(self.runner),
        )
        gc.collect()  # the explainer's weights go before the simulator's load: never two at once
        seconds = time.perf_counter() - started
        self.report.stage(
            "explain",
            seconds,
            run_id=explained.run_id,
            explained=explained.explained,
            failed=explained.failed,
            llm=explained.llm_usage,
        )
        return explained

    def score(self, explained: ExplainResult, simulator: str, method: str, scorers: str) -> ScoreResult:
        started = time.perf_counter()
        scored = on_runner(simulate_and_score, self.runner)(
            root=self.root,
            explanations=explained.run_id,
            simulator=simulator,
            method=method,
            seed=self.shared["seed"],
            scorers=scorers,
            options=self.options,
            backend=self.backends[1],
            runner=str(self.runner),
        )
        gc.collect()
        summary = scored.summary
        self.report.stage(
            "score",
            time.perf_counter() - started,
            run_id=scored.run_id,
            scored=summary["scored"],
            failed=summary["failed"],
            summary=summary,
            plot=scored.plot_uri,
            llm=scored.llm_usage,
        )
        return scored

    def finish(self, extracted: ExtractResult, scored: ScoreResult, publish_table: bool) -> AtlasResult:
        """Publish (unless told not to), build the Data Docs, and close the run report."""
        storage, report = self.storage, self.report
        table_uri = version = None
        entries = validation_entries(storage, lineage_chain(storage, scored.run_id))
        if publish_table:
            started = time.perf_counter()
            published = publish(root=self.root, scores=scored.run_id)
            report.stage("publish", time.perf_counter() - started, **asdict(published))
            table_uri, version = published.table_uri, published.version
            entries += _publish_validations(storage, published.publish_id)
        started = time.perf_counter()
        docs = build_data_docs(storage, f"{RUNS}/{report.record['run_id']}/data_docs", entries)
        failed = sum(not entry.result["success"] for entry in entries)
        report.stage("data_docs", time.perf_counter() - started, uri=docs, validations=len(entries), failed=failed)
        plots = [extracted.plot_uri, *[uri for uri in (scored.layer_plot_uri, scored.plot_uri) if uri]]
        report.finish(
            "completed",
            neurons=scored.summary["neurons"],
            neurons_failed=_neurons_without_score(storage, scored.run_id),
            llm=_llm_totals(report.record["stages"]),
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
    record = storage.read_json(f"published/_publishes/{publish_id}.json")
    return [
        ValidationEntry("published", f"{publish_id} {name}", report["ge_result"])
        for name, report in record["validation"].items()
        if report.get("ge_result")
    ]


def _neurons_without_score(storage: Storage, scores_run: str) -> int:
    """Neurons none of whose explanations got a score from any scorer."""
    from neuronatlas.datasets import explanations as contract

    table = storage.read_parquet(contract.scores_path(scores_run), schema=contract.SCORES_SCHEMA).to_pandas()
    columns = ["top_and_random_score", "embedding_auc", "detection_auc", "fuzzing_auc"]
    scored = table[columns].notna().any(axis=1).groupby([table["layer"], table["neuron"]]).any()
    return int((~scored).sum())


def _llm_totals(stages: list[dict[str, Any]]) -> dict[str, float]:
    totals = {"calls": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "cost_usd": 0.0, "cache_hits": 0.0}
    for stage in stages:
        for name in totals:
            totals[name] += float((stage.get("llm") or {}).get(name) or 0)
    return {name: round(value, 4) if name == "cost_usd" else int(value) for name, value in totals.items()}
