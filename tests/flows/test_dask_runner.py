"""Scale-out on Dask: the atlas with `runner="dask:ADDRESS"` on a 2-worker LocalCluster against a
dedicated Prefect server runs extraction shards and layer batches on the workers, and publishes
the same rows as the local runner. The LLM is an OpenAI-compatible HTTP server answering sensibly
(the same for every process)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from neuronatlas.adapters.delta import DeltaLocation
from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import published
from tests.flows.test_deployments import answer
from tests.support import small_jsonl_corpus

SCRIPT = """
import json, sys
from neuronatlas.runtime import configure_environment
configure_environment()
from neuronatlas.config import LLMOptions
from neuronatlas.flows.atlas import atlas
arguments = json.loads(sys.argv[1])
arguments["options"] = LLMOptions(base_url=arguments.pop("base_url"), budget_tokens=arguments.pop("budget", None))
result = atlas(**arguments)
print("RUN", result.run_id, result.status)
"""


def run_atlas(env: dict[str, str], **arguments: object) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(arguments)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def rows(root: Path) -> pd.DataFrame:
    table = DeltaLocation(Storage.open(str(root)), published.TABLE_PATH).read(None, published.SCHEMA).to_pandas()
    columns = ["layer", "neuron", "explanation", "top_and_random_score", "null_score", "embedding_auc", "rank_score"]
    return table[columns].sort_values(["layer", "neuron"], ignore_index=True)


def test_the_atlas_on_a_dask_cluster_publishes_what_the_local_runner_does(
    prefect_server: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import Client, LocalCluster

    from tests.fake_openai import FaultyServer, serve

    for name in ("PREFECT_API_URL", "PREFECT_HOME"):  # the workers inherit it
        monkeypatch.setenv(name, prefect_server[name])
    source = small_jsonl_corpus(tmp_path / "wiki300.jsonl")
    common = {
        "source": str(source),
        "limit": 48,
        "extract_layers": "0,2",
        "top_k": 5,
        "random_k": 4,
        "layers": "0,2",
        "neurons": "4",
        "explainer": "openai:m",
        "simulator": "openai:m",
    }
    server = FaultyServer(answer)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
        serve(server) as url,
    ):
        workers = set(client.scheduler_info()["workers"])
        on_dask = tmp_path / "dask"
        run_atlas(prefect_server, root=str(on_dask), runner=f"dask:{cluster.scheduler_address}", base_url=url, **common)
        local = tmp_path / "local"
        spent_before = server.tokens_served
        run_atlas(prefect_server, root=str(local), runner="local", base_url=url, **common)
        whole_run = server.tokens_served - spent_before

        # one budget for the run across both workers: 60% of what the run needs. Were it a budget
        # per worker (each layer, half the run, fits in 60%), the run would spend all of it.
        budget = int(0.6 * whole_run)
        spent_before = server.tokens_served
        capped = tmp_path / "capped"
        dask = f"dask:{cluster.scheduler_address}"
        run_atlas(
            prefect_server, root=str(capped), runner=dask, base_url=url, budget=budget, publish_table=False, **common
        )
        assert 0 < server.tokens_served - spent_before <= budget
    pd.testing.assert_frame_equal(rows(on_dask), rows(local))
    assert len(rows(local)) > 0
    # every layer partition was committed by a Dask worker, not the flow's process
    storage = Storage.open(str(on_dask))
    manifests = [
        storage.read_json(str(path.relative_to(on_dask)))
        for folder in ("activations", "explanations", "scores")
        for path in on_dask.glob(f"{folder}/**/layer=*/_manifest.json")
    ]
    assert len(manifests) == 2 + 2 + 2
    assert {manifest["worker"] for manifest in manifests} <= workers
    local_manifests = Storage.open(str(local))
    [explained] = local_manifests.list("explanations")
    assert local_manifests.manifest(f"explanations/{explained}/layer=0")["worker"] == "local"
    capped_storage = Storage.open(str(capped))
    [scored] = capped_storage.list("scores")
    reasons = capped_storage.read_parquet(f"scores/{scored}").to_pandas()["failure_reason"].dropna()
    assert reasons.str.contains("budget exhausted").any()  # the cap stopped requests, recorded as failures
