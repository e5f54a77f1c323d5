"""The `atlas` flow end to end (real Prefect, the shipped subject model, real GE suites, a real
Delta table, local and on a real S3-compatible server) with the scripted LLM; and what users read
back: versions, exports, lineage, the runs report."""

import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from neuronatlas import catalog
from neuronatlas.adapters.delta import DeltaLocation
from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import explanations as contract
from neuronatlas.datasets import published
from neuronatlas.errors import ValidationFailedError
from neuronatlas.flows.atlas import AtlasResult, atlas
from neuronatlas.flows.publish import publish
from tests.integration.test_cli_bad_input import run_cli
from tests.support import ScriptedBackend, small_jsonl_corpus

SMALL = {
    "limit": 48,
    "extract_layers": "0,2",
    "top_k": 5,
    "random_k": 4,
    "layers": "0,2",
    "neurons": "6",
    "samples": 3,
    "prompt_format": "pairs",
}
"""The scripted explainer names the strongest token of the paper's format."""


@dataclass
class Run:
    root: str
    source: str
    result: AtlasResult
    explainer: ScriptedBackend


def run_atlas(root: str, source: str) -> Run:
    explainer = ScriptedBackend()
    result = atlas(root=root, source=source, explainer_backend=explainer, simulator_backend=ScriptedBackend(), **SMALL)
    return Run(root, source, result, explainer)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("atlas-local")
    source = str(small_jsonl_corpus(folder / "wiki300.jsonl"))
    return run_atlas(str(folder / "atlas"), source)


def published_frame(root: str, version: int | None = None) -> pd.DataFrame:
    location = DeltaLocation(Storage.open(root), published.TABLE_PATH)
    return location.read(version, published.SCHEMA).to_pandas().sort_values(["layer", "neuron"], ignore_index=True)


def test_the_atlas_publishes_every_neurons_best_explanation_with_its_lineage(local_run: Run) -> None:
    result, storage = local_run.result, Storage.open(local_run.root)
    assert result.status == "completed" and result.version == 1  # version 0 is the empty table
    report = storage.read_json(f"runs/{result.run_id}.json")
    assert [stage["stage"] for stage in report["stages"]] == [
        "ingest",
        "extract",
        "explain",
        "score",
        "publish",
        "data_docs",
    ]
    stages = {stage["stage"]: stage for stage in report["stages"]}
    scores_run = stages["score"]["run_id"]
    scores = storage.read_parquet(contract.scores_path(scores_run)).to_pandas()
    best = scores[scores["is_best"] & scores["explanation"].notna()].sort_values(["layer", "neuron"], ignore_index=True)
    table = published_frame(local_run.root)
    assert len(table) == len(best) > 0
    identity = ["layer", "neuron", "explanation_id", "explanation"]
    assert (table[identity] == best[identity]).all().all()
    assert (table["rank_by"] == "selection_auc").all()
    assert (table["rank_score"] == best["selection_auc"]).all()
    for column in ("top_and_random_score", "embedding_auc", "embedding_null", "lookup_score"):
        pd.testing.assert_series_equal(table[column], best[column], check_names=False)
    # lineage columns: every run and fingerprint the row came from
    activations = storage.manifest(f"activations/smollm2-135m/{stages['extract']['run_id']}")
    corpus = storage.manifest(f"corpus/{stages['ingest']['corpus_id']}")
    assert set(table["scores_run"]) == {scores_run}
    assert set(table["explanations_run"]) == {stages["explain"]["run_id"]}
    assert set(table["model_checksum"]) == {activations["model_checksum"]}
    assert set(table["corpus_fingerprint"]) == {corpus["source"]["fingerprint"]}
    assert set(table["explainer"]) == {"scripted:v1"} and set(table["prompt_version"]) == {"3"}
    assert table["prefect_flow_run_id"].str.fullmatch(r"[0-9a-f-]{36}").all()
    # every row carries the run's gap per scorer and whether it is significant
    gaps = storage.manifest(f"scores/{scores_run}")["summary"]["scorers"]
    assert gaps["simulation"] and gaps["embedding"]
    for scorer in ("simulation", "embedding"):
        assert set(table[f"{scorer}_run_gap"]) == {gaps[scorer]["gap"]}
        assert set(table[f"{scorer}_run_gap_low"]) == {gaps[scorer]["ci95"][0]}
        assert set(table[f"{scorer}_run_significant"]) == {gaps[scorer]["significant"]}
    assert table["detection_run_gap"].isna().all()  # not run: null, not 0
    # the run report
    assert report["status"] == "completed" and report["neurons"] == 6
    assert report["llm"]["calls"] == local_run.explainer.usage.calls + stages["score"]["llm"]["calls"]
    assert all(stage["seconds"] >= 0 for stage in report["stages"])
    assert [r["run_id"] for r in catalog.runs(local_run.root)] == [result.run_id]


def test_each_run_builds_data_docs_and_plots(local_run: Run) -> None:
    """Great Expectations' Data Docs of every suite behind the run (each dataset's partitions,
    the published rows and table), and the pictures, all under the root."""
    result = local_run.result
    docs = Path(result.data_docs)
    assert docs.parent.parent == Path(local_run.root) / "data_docs" and docs.name == "index.html"
    pages = [str(page.relative_to(docs.parent)) for page in docs.parent.glob("validations/**/*.html")]
    suites = {page.split("/")[1] for page in pages}
    datasets = ["corpus", "activations", "neuron_stats", "explanations", "simulations", "control_simulations", "scores"]
    assert suites == {*datasets, "published"}
    # extraction: 2 layers x (records, stats); explain/score: 2 layers; corpus 1; publish 2
    assert len(pages) == 1 + 4 + 2 + 3 * 2 + 2
    index = docs.read_text()
    assert all(suite in index for suite in suites)
    report = Storage.open(local_run.root).read_json(f"runs/{result.run_id}.json")
    stage = next(stage for stage in report["stages"] if stage["stage"] == "data_docs")
    assert (stage["validations"], stage["failed"]) == (len(pages), 0)
    assert [Path(plot).name for plot in result.plots] == ["summary.png", "scores_by_layer.png", "real_vs_null.png"]
    for plot in result.plots:
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_skips_every_stage_and_publishes_nothing(local_run: Run, tmp_path: Path) -> None:
    root = str(tmp_path / "atlas")
    shutil.copytree(local_run.root, root)
    again = run_atlas(root, local_run.source)
    assert again.explainer.usage.calls == 0
    report = Storage.open(root).read_json(f"runs/{again.result.run_id}.json")
    stages = {stage["stage"]: stage for stage in report["stages"]}
    assert stages["extract"]["layers_extracted"] == 0 and stages["ingest"]["created"] is False
    assert stages["publish"]["skipped"] is True
    assert again.result.version == 1
    assert [v["version"] for v in catalog.versions(root)] == [0, 1]
    assert len(catalog.runs(root)) == 2


NIGHTS = 30 if os.environ.get("NEURONATLAS_BATTERY") == "full" else 3
"""Reruns of the month-of-nights test: 30 from `make bench`, a few in the test suite."""
RERUN_BYTES = 20_000
"""What a rerun that changed nothing may add under the root: its run record (about 7 kB)."""


def test_a_month_of_nights_on_an_unchanged_root_asks_nothing_publishes_nothing_and_stays_bounded(
    local_run: Run, tmp_path: Path
) -> None:
    root = tmp_path / "atlas"
    shutil.copytree(local_run.root, root)

    def footprint() -> tuple[int, int]:
        files = [path for path in root.rglob("*") if path.is_file()]
        return len(files), sum(path.stat().st_size for path in files)

    files, size = footprint()
    docs = set()
    for night in range(NIGHTS):
        again = run_atlas(str(root), local_run.source)
        assert again.explainer.usage.calls == 0, night  # no LLM call
        assert again.result.version == 1, night  # no new version
        docs.add(Path(again.result.data_docs).relative_to(root))
        now_files, now_size = footprint()
        assert now_files - files <= 1 and now_size - size <= RERUN_BYTES, (night, now_files - files, now_size - size)
        files, size = now_files, now_size
    assert docs == {Path(local_run.result.data_docs).relative_to(local_run.root)}  # the same validations' site
    assert [v["version"] for v in catalog.versions(str(root))] == [0, 1]
    assert len(catalog.runs(str(root))) == NIGHTS + 1


def test_export_every_format_reads_back_in_polars_pandas_and_duckdb(local_run: Run, tmp_path: Path) -> None:
    expected = published_frame(local_run.root)
    for fmt in ("parquet", "jsonl", "csv"):
        out = tmp_path / f"atlas.{fmt}"
        done = run_cli("export", str(out), "--root", local_run.root, "--version", "1")
        assert done.returncode == 0, done.stderr
        assert f"version 1, {len(expected)} rows, {fmt}" in done.stdout
        reader = {"parquet": "read_parquet", "jsonl": "read_json", "csv": "read_csv"}[fmt]
        pandas_read = {"parquet": pd.read_parquet, "jsonl": lambda f: pd.read_json(f, lines=True), "csv": pd.read_csv}
        frames = {
            "polars": getattr(pl, {"jsonl": "read_ndjson"}.get(fmt, reader))(out).to_pandas(),
            "pandas": pandas_read[fmt](out),
            "duckdb": duckdb.sql(f"SELECT * FROM {reader}('{out}')").df(),
        }
        for name, unsorted in frames.items():
            frame = unsorted.sort_values(["layer", "neuron"], ignore_index=True)
            assert len(frame) == len(expected), (fmt, name)
            assert list(frame["explanation"]) == list(expected["explanation"]), (fmt, name)
            scores = frame["top_and_random_score"].astype(float).round(9)
            assert scores.equals(expected["top_and_random_score"].round(9)), (fmt, name)
        assert not list(tmp_path.glob(".*.tmp"))  # written beside, then renamed


def test_versions_and_lineage_through_the_cli(local_run: Run) -> None:
    listed = run_cli("versions", "--root", local_run.root)
    assert listed.returncode == 0, listed.stderr
    assert "CREATE TABLE" in listed.stdout and "MERGE" in listed.stdout
    row = published_frame(local_run.root).iloc[0]
    walked = run_cli("lineage", "--root", local_run.root, "--neuron", f"{row['layer']}:{row['neuron']}")
    assert walked.returncode == 0, walked.stderr
    text = walked.stdout
    # from the row back to the corpus, each with its validation outcome
    order = [text.index(f"<- {name} ") for name in ("publish", "scores", "explanations", "activations", "corpus")]
    assert order == sorted(order)
    assert text.count("validation passed") == 4
    for needle in (row["explanation"], row["model_checksum"], row["corpus_fingerprint"], row["scores_run"],
                   row["explanations_run"], row["activations_run"], row["prefect_flow_run_id"], "hf_id",
                   "prompt_version", row["code_version"]):  # fmt: skip
        assert str(needle) in text, needle
    runs = run_cli("runs", "--root", local_run.root)
    assert local_run.result.run_id in runs.stdout and "completed" in runs.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "{tmp}/out.txt"], "--format .txt: expected one of parquet, jsonl, csv"),
        (["export", "{tmp}/out.csv", "--version", "9"], "--version 9: "),
        (["export", "{tmp}/missing/out.csv"], "missing/out.csv: folder"),
        (["lineage", "--neuron", "five"], "--neuron five: expected LAYER:NEURON"),
        (["lineage", "--neuron", "0:99999"], "--neuron 0:99999: not in version 1"),
    ],
)
def test_bad_table_requests_are_one_clear_line(local_run: Run, tmp_path: Path, args: list[str], message: str) -> None:
    done = run_cli(*[arg.format(tmp=tmp_path) for arg in args], "--root", local_run.root)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_nothing_published_yet_is_a_clear_error(tmp_path: Path) -> None:
    done = run_cli("versions", "--root", str(tmp_path / "empty"))
    assert done.returncode == 2 and "nothing published yet" in done.stderr, done.stderr


def test_publishing_is_refused_when_an_upstream_suite_failed(local_run: Run, tmp_path: Path) -> None:
    root = str(tmp_path / "atlas")
    shutil.copytree(local_run.root, root)
    shutil.rmtree(f"{root}/published")
    storage = Storage.open(root)
    scores_run = published_frame(local_run.root)["scores_run"][0]
    partition = f"explanations/{published_frame(local_run.root)['explanations_run'][0]}/layer=2"
    manifest = storage.manifest(partition)
    manifest["validation"]["explanations"]["success"] = False
    storage.write_json(f"{partition}/_manifest.json", manifest)
    with pytest.raises(ValidationFailedError, match=r"upstream suite not passed: explanations e-\w+ layer=2"):
        publish(root=root, scores=scores_run)
    assert not DeltaLocation(storage, published.TABLE_PATH).exists()


def test_a_table_failing_its_suite_after_the_merge_is_rolled_back(local_run: Run, tmp_path: Path) -> None:
    """A row written by another tool breaks the table's suite: the MERGE commits, the whole-table
    check fails, the MERGE is reverted and the publish is not counted as done."""
    root = str(tmp_path / "atlas")
    shutil.copytree(local_run.root, root)
    storage = Storage.open(root)
    location = DeltaLocation(storage, published.TABLE_PATH)
    good = location.read(None, published.SCHEMA)
    scores_run = good["scores_run"][0].as_py()
    shutil.rmtree(f"{root}/published")  # publish again onto a table holding one bad row
    location.create(published.SCHEMA, {})
    bad = good.slice(0, 1).set_column(good.schema.get_field_index("neuron"), "neuron", pa.array([99_999], pa.int32()))
    bad = bad.set_column(bad.schema.get_field_index("test_score"), "test_score", pa.array([7.5]))
    write_deltalake(location.table_uri, bad, mode="append")
    before = location.open().version()
    with pytest.raises(ValidationFailedError, match=r"version 2: .*test_score"):
        publish(root=root, scores=scores_run)
    history = location.history()
    assert history[0][published.ROLLED_BACK_KEY] == f"p-{scores_run[2:]}"
    assert location.read(None, published.SCHEMA).equals(location.read(before, published.SCHEMA))


def test_a_publish_stopped_after_its_commit_is_finished_by_a_rerun(local_run: Run, tmp_path: Path) -> None:
    """Killed between the MERGE commit and its record: the version is there, `_publishes/<id>.json`
    is not. A rerun checks that version against the table's suite and writes the record."""
    root = str(tmp_path / "atlas")
    shutil.copytree(local_run.root, root)
    storage = Storage.open(root)
    [name] = [n for n in storage.list(published.PUBLISHES) if n.endswith(".json")]
    record = storage.read_json(f"{published.PUBLISHES}/{name}")
    Path(root, published.PUBLISHES, name).unlink()
    scores_run = published_frame(root)["scores_run"][0]
    again = publish(root=root, scores=scores_run)
    assert not again.skipped and again.version == record["version"] == 1
    assert (again.inserted, again.updated, again.rows) == (
        record["inserted"],
        record["updated"],
        record["rows_offered"],
    )
    written = storage.read_json(f"{published.PUBLISHES}/{name}")
    assert written["validation"]["table"]["success"] and written["version"] == record["version"]
    assert DeltaLocation(storage, published.TABLE_PATH).open().version() == 1  # nothing committed again
    assert publish(root=root, scores=scores_run).skipped


def _publish_in_a_process(root: str, scores_run: str, barrier: Any) -> None:
    barrier.wait()
    publish(root=root, scores=scores_run)


def test_one_score_run_published_from_four_processes_at_once_is_one_publish(
    local_run: Run, tmp_path: Path, prefect_server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four `publish` flows of the same score run start together (one Prefect server): one MERGE,
    the others find it; the record names the flow run that made the version, with its counts."""
    for name, value in prefect_server.items():
        monkeypatch.setenv(name, value)
    root = str(tmp_path / "atlas")
    shutil.copytree(local_run.root, root)
    scores_run = published_frame(root)["scores_run"][0]
    shutil.rmtree(f"{root}/published")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    processes = [context.Process(target=_publish_in_a_process, args=(root, scores_run, barrier)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=600)
    assert [p.exitcode for p in processes] == [0] * 4
    storage = Storage.open(root)
    location = DeltaLocation(storage, published.TABLE_PATH)
    merges = [c for c in location.history() if c["operation"] == "MERGE"]
    assert len(merges) == 1  # one publish; the others found it
    [name] = [n for n in storage.list(published.PUBLISHES) if n.endswith(".json")]
    record = storage.read_json(f"{published.PUBLISHES}/{name}")
    assert record["version"] == merges[0]["version"] and record["inserted"] == record["rows_offered"] > 0
    assert record["prefect_flow_run_id"] == merges[0]["neuronatlas_flow_run_id"]
    varying = ["published_at", "prefect_flow_run_id"]
    assert published_frame(root).drop(columns=varying).equals(published_frame(local_run.root).drop(columns=varying))


def test_the_atlas_on_s3_publishes_the_same_rows(local_run: Run, s3_bucket: str, tmp_path: Path) -> None:
    root = f"s3://{s3_bucket}/atlas"
    on_s3 = run_atlas(root, local_run.source)
    assert on_s3.result.table_uri == f"{root}/published/atlas"
    local, remote = published_frame(local_run.root), published_frame(root)
    same = [
        "layer",
        "neuron",
        "explanation",
        "top_and_random_score",
        "embedding_auc",
        "rank_score",
        "corpus_fingerprint",
    ]
    pd.testing.assert_frame_equal(local[same], remote[same])
    assert [v["version"] for v in catalog.versions(root)] == [0, 1]
    assert catalog.lineage(root)["publishes"][0]["chain"][-1]["validation"] == "passed"
    # the viewer reads the same pages back from S3
    from neuronatlas.viewer import site

    local_site = site.build(local_run.root, str(tmp_path / "local-site"), embed=False)
    remote_site = site.build(root, str(tmp_path / "s3-site"), embed=False)
    assert remote_site.pages == local_site.pages == len(remote)
    for page in (local_site.out / "neurons").rglob("*.html"):
        mirrored = remote_site.out / page.relative_to(local_site.out)
        assert _excerpts(mirrored.read_text()) == _excerpts(page.read_text()) != ""


def _excerpts(html: str) -> str:
    """The excerpt blocks of a neuron page (its tokens, values and shades)."""
    return html[html.find('<div class="excerpts">') : html.find("All sampled explanations")]


def test_cli_run_rejects_bad_options_before_any_work(tmp_path: Path) -> None:
    done = run_cli("run", "--root", str(tmp_path / "atlas"), "--scorers", "vibes")
    assert done.returncode == 2 and "--scorers vibes: expected" in done.stderr, done.stderr
    assert not (tmp_path / "atlas").exists()


CONFIG = """
runner = "local"

[ingest]
source = "{source}"

[extract]
limit = 48
layers = "0"
top_k = 5
random_k = 4

[explain]
layers = "0"
neurons = "2"
explainer = "openai:m"

[score]
simulator = "openai:m"
scorers = "simulation"

[llm]
base_url = "{url}"
concurrency = 2
"""


def test_cli_run_from_a_config_file_and_again_from_its_record(tmp_path: Path) -> None:
    """`neuronatlas run --config atlas.toml` takes every stage's settings from the file; the run's
    record holds the resolved config, and `run --config runs/<id>.json` repeats the same run (the
    same datasets, nothing new to publish); an option typed beside the file overrides it."""
    from tests.fake_openai import FaultyServer, serve
    from tests.flows.test_deployments import answer

    root = str(tmp_path / "atlas")
    source = small_jsonl_corpus(tmp_path / "wiki.jsonl")
    with serve(FaultyServer(answer)) as url:
        config = tmp_path / "atlas.toml"
        config.write_text(CONFIG.format(source=source, url=url))
        first = run_cli("run", "--root", root, "--config", str(config))
        assert first.returncode == 0, first.stderr[-3000:]
        [record] = catalog.runs(root)
        assert record["status"] == "completed" and record["config"]["explain"]["neurons"] == "2"
        assert record["config"]["extract"]["limit"] == 48 and record["config"]["score"]["scorers"] == "simulation"
        assert record["config"]["ingest"]["tokenizer_of"] == "smollm2-135m"
        again = run_cli("run", "--root", root, "--config", f"{root}/runs/{record['run_id']}.json")
        assert again.returncode == 0, again.stderr[-3000:]
        more = run_cli("run", "--root", root, "--config", str(config), "--neurons", "3")
        assert more.returncode == 0, more.stderr[-3000:]
    second, third = (r for r in sorted(catalog.runs(root), key=lambda r: r["started_at"])[1:])
    assert second["config"] == record["config"]
    assert [s.get("run_id") for s in second["stages"][1:4]] == [s.get("run_id") for s in record["stages"][1:4]]
    assert second["version"] == record["version"]  # the same score run: published once
    assert third["config"]["explain"]["neurons"] == "3" and third["config"]["extract"] == record["config"]["extract"]
    assert third["stages"][1]["run_id"] == record["stages"][1]["run_id"]  # extraction reused
    assert third["stages"][2]["run_id"] != record["stages"][2]["run_id"]  # a new selection of neurons
