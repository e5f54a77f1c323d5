"""Progress on long work: a live bar on a terminal, periodic log lines elsewhere."""

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress(
    description: str,
    total: int,
    logger: logging.Logger | logging.LoggerAdapter,
    unit: str = "items",
    rate_unit: str = "tokens",
) -> Iterator[Callable[[int, int], None]]:
    """Yield `update(done, work)`: `done` of `total` items finished, `work` units (tokens) so far."""
    started = time.perf_counter()
    last_log = [started]

    def rate(work: int) -> str:
        return f"{work / max(time.perf_counter() - started, 1e-9):,.0f} {rate_unit}/s"

    if sys.stderr.isatty():
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=False) as bar:
            task_id = bar.add_task(description, total=total, rate="")
            yield lambda done, work: bar.update(task_id, completed=done, rate=rate(work))
        return

    def update(done: int, work: int) -> None:
        now = time.perf_counter()
        if now - last_log[0] >= 5 or done >= total:
            last_log[0] = now
            eta = (now - started) / max(done, 1) * (total - done)
            logger.info("%s: %d/%d %s, %s, ETA %.0f s", description, done, total, unit, rate(work), eta)

    yield update
