"""`infra/prefect.yaml` declares the same deployments `neuronatlas deploy` creates."""

from pathlib import Path

import yaml

from neuronatlas.flows.deploy import DEFAULT_POOL, DEPLOYMENTS

INFRA = Path(__file__).resolve().parents[2] / "infra" / "prefect.yaml"


def test_the_prefect_yaml_matches_the_deploy_command() -> None:
    spec = yaml.safe_load(INFRA.read_text())
    declared = {entry["name"]: entry for entry in spec["deployments"]}
    assert list(declared) == [deployment.name for deployment in DEPLOYMENTS]
    for deployment in DEPLOYMENTS:
        entry = declared[deployment.name]
        assert entry["entrypoint"] == "flows/atlas.py:atlas"
        assert entry["work_pool"]["name"] == DEFAULT_POOL
        assert entry["description"] == deployment.description
        crons = [schedule["cron"] for schedule in entry.get("schedules", [])]
        assert crons == ([deployment.cron] if deployment.cron else [])
    # the entrypoint file is the flow the module path names
    assert (INFRA.parents[1] / "flows" / "atlas.py").is_file()
