"""Where a stage's units of work run: in the flow's process (`local`), or as Prefect tasks on a
Dask cluster through prefect-dask (`dask`: a local cluster of 2 worker processes made for the
run; `dask:ADDRESS`: an existing scheduler, e.g. tcp://scheduler:8786).

Units are extraction shards (layers) and neuron batches (one layer's neurons) for explanation
and scoring; each is idempotent (it commits its own partitions), so a retried or repeated unit
changes nothing. Workers must reach the same storage root (a shared folder or S3) and the same
Prefect server: a Dask run needs `PREFECT_API_URL` (in ephemeral mode every worker process would
start a server of its own).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from neuronatlas.errors import InputError, require_extra

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

LOCAL_WORKERS = 2


@dataclass(frozen=True)
class Runner:
    kind: str
    """local or dask"""
    address: str | None = None

    @property
    def distributed(self) -> bool:
        return self.kind == "dask"

    def __str__(self) -> str:
        return f"dask:{self.address}" if self.address else self.kind


def parse_runner(value: str) -> Runner:
    kind, _, address = value.partition(":")
    if kind == "local" and not address:
        return Runner("local")
    if kind == "dask":
        if address and "://" not in address:
            address = f"tcp://{address}"
        return Runner("dask", address or None)
    raise InputError(f"--runner {value}: expected local, dask or dask:ADDRESS (e.g. dask:tcp://scheduler:8786)")


def check_runner(value: str) -> Runner:
    """Parse, and refuse a Dask run without a Prefect server."""
    runner = parse_runner(value)
    if runner.distributed:
        require_extra("prefect_dask", "dask", f"--runner {value}")
    if runner.distributed and not os.environ.get("PREFECT_API_URL"):
        raise InputError(
            f"--runner {value}: needs a Prefect server that every Dask worker reaches; start "
            "`prefect server start` and set PREFECT_API_URL"
        )
    return runner


@contextmanager
def cluster_for(runner: Runner) -> Iterator[Runner]:
    """`dask` without an address: a local cluster of worker processes for the duration."""
    if not runner.distributed or runner.address:
        yield runner
        return
    from distributed import LocalCluster

    with LocalCluster(n_workers=LOCAL_WORKERS, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield Runner("dask", cluster.scheduler_address)


def on_runner(stage: Callable[..., Any], runner: Runner) -> Callable[..., Any]:
    """The stage flow, with a Dask task runner when the runner is distributed."""
    if not runner.distributed:
        return stage
    from prefect_dask import DaskTaskRunner

    return stage.with_options(task_runner=DaskTaskRunner(address=runner.address))  # type: ignore[attr-defined]


def worker_name() -> str:
    """The Dask worker running this code, or "local"."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def gather_layers(
    futures: list[tuple[int, Any]], llm: Any, of_layer: Callable[[int], list[int]], update: Callable[[int, int], None]
) -> None:
    """Wait for each layer task in turn: add what its worker's LLM spent to `llm`'s account and
    move the progress bar by the layer's neurons."""
    done = 0
    for layer, future in futures:
        llm.absorb(future.result())
        done += len(of_layer(layer))
        update(done, done)
