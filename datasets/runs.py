"""Contract of the atlas run records, `runs/<run>.json`: the run's resolved config, its status,
each stage's wall time and outputs, neurons done and failed, LLM tokens and cost. Rewritten after
every stage, so a crashed run still says how far it got."""

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from neuronatlas.adapters.storage import Storage
from neuronatlas.version import code_version

RUNS = "runs"
"""Where the records are, under the root."""


def new_run_id() -> str:
    return f"a-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


class RunReport:
    """`runs/<run>.json`, rewritten after every stage, so a crashed run still says how far it got."""

    def __init__(
        self, storage: Storage, run_id: str, config: dict[str, Any], backends: dict[str, str], flow_run_id: str | None
    ) -> None:
        self.storage = storage
        self.path = f"{RUNS}/{run_id}.json"
        self.started = time.perf_counter()
        self.record: dict[str, Any] = {
            "run_id": run_id,
            "flow": "atlas",
            "status": "running",
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config,
            **({"backends": backends} if backends else {}),
            "code_version": code_version(),
            "prefect_flow_run_id": flow_run_id,
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
