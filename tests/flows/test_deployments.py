"""Schedules for real: `prefect server start` on loopback, `neuronatlas deploy` (and `prefect deploy`
with infra/prefect.yaml), a run triggered with `prefect deployment run`, executed by a process
worker, completing and publishing. The LLM is an OpenAI-compatible HTTP server answering sensibly."""

import json
import subprocess
import sys
from pathlib import Path

from neuronatlas import catalog
from tests.support import is_json_simulation, json_simulation_answer, small_jsonl_corpus

CHECKOUT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(args: list[str], env: dict[str, str], timeout: int = 120, cwd: Path | None = None) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def answer(messages: list[dict[str, str]]) -> str:
    last = messages[-1]["content"]
    if is_json_simulation(last):  # mark numbers
        return json_simulation_answer(last, lambda token: token.strip().isdigit())
    return "numbers, especially years."


def test_a_deployment_run_completes_and_publishes(prefect_server: dict[str, str], tmp_path: Path) -> None:
    from tests.fake_openai import FaultyServer, serve

    env = prefect_server
    root = tmp_path / "atlas"
    source = small_jsonl_corpus(tmp_path / "wiki300.jsonl")
    prefect = str(BIN / "prefect")
    # the declarative deployments (infra/prefect.yaml, from the checkout) need the pool to exist
    run([prefect, "work-pool", "create", "neuronatlas", "--type", "process"], env)
    run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml"], env, cwd=CHECKOUT)
    nightly = run([prefect, "deployment", "inspect", "atlas/atlas-nightly"], env)
    assert "'cron': '0 2 * * *'" in nightly and "'timezone': 'UTC'" in nightly
    # `neuronatlas deploy` replaces both: the flow found by module path, the root given here
    # with a spend cap and a concurrency limit: the LLM options go into the deployments' config
    deploy = [str(BIN / "neuronatlas"), "deploy", "--root", str(root), "--budget-tokens", "5000000"]
    created = run([*deploy, "--concurrency", "3"], env)
    assert "atlas/atlas-nightly, atlas/atlas-on-demand" in created
    on_demand = run([prefect, "deployment", "inspect", "atlas/atlas-on-demand"], env)
    assert "'entrypoint': 'neuronatlas.flows.atlas.atlas'" in on_demand and str(root) in on_demand
    assert "'budget_tokens': 5000000" in on_demand and "'concurrency': 3" in on_demand

    with serve(FaultyServer(answer)) as url:
        parameters = {
            "source": str(source),
            "limit": 48,
            "extract_layers": "0",
            "top_k": 5,
            "random_k": 4,
            "layers": "0",
            "neurons": "2",
            "explainer": "openai:m",
            "simulator": "openai:m",
            "options": {"base_url": url},
        }
        triggered = run(
            [prefect, "deployment", "run", "atlas/atlas-on-demand", "--params", json.dumps(parameters)], env
        )
        flow_run_id = triggered.split("UUID:")[1].split()[0]
        run([prefect, "worker", "start", "--pool", "neuronatlas", "--run-once"], env, timeout=600)
        state = run([prefect, "flow-run", "inspect", flow_run_id], env)
    assert "COMPLETED" in state, state[-2000:]
    versions = catalog.versions(str(root))
    assert [v["version"] for v in versions] == [0, 1] and versions[1]["rows"] == 2
    [report] = catalog.runs(str(root))
    assert report["status"] == "completed" and report["prefect_flow_run_id"] == flow_run_id
    llm = report["config"]["llm"]  # the run's own options (base_url) laid over the deployed ones
    assert llm["budget_tokens"] == 5_000_000 and llm["concurrency"] == 3 and llm["base_url"] == url
