"""Deployments of the `atlas` flow on a Prefect server: a nightly schedule and an on-demand one.

`neuronatlas deploy` creates them through Prefect's API (the flow is found by module path, so an
installed package is enough: no checkout, no image); `infra/prefect.yaml` declares the same two
for `prefect deploy` from a checkout (a test keeps the two in step). Runs need a worker polling
the process work pool: `prefect worker start --pool neuronatlas`.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from neuronatlas.config import AtlasConfig
from neuronatlas.errors import InputError

DEFAULT_POOL = "neuronatlas"
NIGHTLY_CRON = "0 2 * * *"


@dataclass(frozen=True)
class Deployment:
    name: str
    cron: str | None
    description: str


DEPLOYMENTS = (
    Deployment("atlas-nightly", NIGHTLY_CRON, "The atlas on its root every night at 02:00 UTC: only new work is done."),
    Deployment("atlas-on-demand", None, "The atlas when asked: `prefect deployment run atlas/atlas-on-demand`."),
)


def check_server() -> str:
    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value() or ""
    if not url:
        raise InputError(
            "deploy: no Prefect server (PREFECT_API_URL is not set); schedules need one: "
            "`prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    return url


def deploy(root: str, pool: str = DEFAULT_POOL, config: AtlasConfig | None = None) -> list[str]:
    """Create (or update) both deployments on the server, and the process work pool if missing,
    both running `config` (the default run if None; a run's parameters laid over it). A local
    root becomes an absolute path: workers run flows from their own folder."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments.runner import EntrypointType
    from prefect.exceptions import ObjectNotFound

    from neuronatlas.flows.atlas import atlas

    url = check_server()
    root = root if "://" in root else str(Path(root).expanduser().resolve())
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except Exception as error:
            raise InputError(f"deploy: Prefect server at {url} did not answer: {error}") from None
    names = []
    for deployment in DEPLOYMENTS:
        atlas.deploy(
            name=deployment.name,
            work_pool_name=pool,
            build=False,
            push=False,
            entrypoint_type=EntrypointType.MODULE_PATH,
            cron=deployment.cron,
            parameters={"root": root, "config": (config or AtlasConfig()).model_dump()},
            description=deployment.description,
            print_next_steps=False,
        )
        names.append(f"atlas/{deployment.name}")
    return names
