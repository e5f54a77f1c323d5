"""Extraction throughput beside a bare forward pass, on the same batches, and peak memory vs corpus size.

    .venv/bin/python bench/extract.py [--excerpts 256] [--rounds 3] [--rss-excerpts N] [--rss-repeats 1]
        [--no-rss] [--no-breakdown]

Excerpts: the default corpus source (`wiki-vital-en`) tokenised with the default model's tokenizer,
cut into windows of 64 tokens (`build_windows`), ordered by sequence_id as `load_excerpts` orders a
committed corpus, the first `--excerpts` of them. Model: `smollm2-135m`, fp32, on the CPU, all 30 layers.

- bare forward: `model.model(input_ids=ids, use_cache=False)` under `torch.inference_mode`, no hooks,
  on each of the extraction's batches of 32, run on a copy of the model (extract() hooks the original).
- extraction: `extract()` over all layers (k=20, bottom_candidates=40, a random pool of 55, batch 32),
  then per layer what the flow does before staging: `layer_tables` (layer_records, stats_table,
  records_table) and both tables written as zstd parquet through `Storage` into a temp root. Not
  counted: validation (the GE suites re-read the staged files), commits, manifests, the plot.
- breakdown (once, after the rounds): the same extraction with timers wrapped, in this process only,
  around the library's own parts: the model body's forward, `RunningTopK.update` (top, bottom) and
  `RunningStats.update` (both run inside the forward, in each layer's hook, and are subtracted
  from it), `layer_records`, `stats_table`, `records_table`; what no wrapper covers is reported as
  "other". Per batch, the forward's own work and the merges. Its accumulators are checked equal
  to the rounds'.
- peak RSS: the full extraction (all layers, tables, write) in a fresh child process for N and 4N
  excerpts (N = --rss-excerpts, default --excerpts). Each child reports VmHWM (its peak RSS) after
  loading the model, then resets it (/proc/self/clear_refs) and reports the peak of extract() and
  that of tables + write. Not getrusage: on Linux a child's ru_maxrss (and RUSAGE_CHILDREN) starts
  from the peak of the process that forked it, here this bench after its own extractions.

The machine is noisy (whole passes minutes apart differ by 5%), so the two are paired per batch:
extract() runs with a callback that, after each batch, runs the bare forward of the same batch
(odd rounds) or of the next one, before it is extracted (even rounds); the bare seconds are
taken out of extract()'s. Both count the same tokens (N x 64). The time inside the capture hooks
(merges and statistics) is summed per batch too (a wrapper around the library's `_hooked`), so each
round also prints the forward pass with hooks on, less their work, against the bare forward. The
ratio is the median over rounds of bare / (extract + tables + write); each batch's times are kept
in the JSON.
Writes the numbers to bench/results/extract.json.
"""

import argparse
import copy
import functools
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "extract.json"
SOURCE = "wiki-vital-en"
MODEL = "smollm2-135m"
WINDOW = 64
TOP_K = 20
RANDOM_K = 15
BOTTOM_CANDIDATES = 2 * TOP_K  # as extract_shard calls it
POOL_SIZE = RANDOM_K + 2 * TOP_K  # as the flow sizes the random pool: 55
BATCH_SIZE = 32
SEED = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--excerpts", type=int, default=256, help="excerpts (windows of 64) per pass (default 256)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the paired measure (default 3)")
    parser.add_argument("--rss-excerpts", type=int, default=None, help="N of the N / 4N memory runs")
    parser.add_argument("--rss-repeats", type=int, default=1, help="children per size, alternating (default 1)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child processes")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the instrumented pass")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or args.rss_repeats < 1 or args.excerpts < TOP_K:
        parser.error(f"--rounds and --rss-repeats must be at least 1, --excerpts at least {TOP_K}")
    if args.rss_excerpts is None:
        args.rss_excerpts = args.excerpts
    return args


def set_up_environment() -> None:
    """Offline and quiet, before any heavy import."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from neuronatlas.runtime import configure_environment

    configure_environment()


# -- inputs ------------------------------------------------------------------------------------


def corpus_windows(limit: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(N, 64) token ids and (N,) sequence ids: the first `limit` windows by sequence_id; and all windows."""
    from neuronatlas.adapters.models import open_tokenizer
    from neuronatlas.adapters.sources import SourceSpec, read_source
    from neuronatlas.core.corpus import build_windows

    loaded = read_source(SourceSpec(SOURCE))
    tokenizer = open_tokenizer(MODEL)
    windows, _ = build_windows(loaded.documents, tokenizer.encode, tokenizer.token_strings, WINDOW)
    if len(windows) < limit:
        raise SystemExit(f"{SOURCE}: only {len(windows)} windows of {WINDOW}, {limit} asked")
    chosen = sorted(windows, key=lambda w: w.sequence_id)[:limit]
    token_ids = np.array([w.token_ids for w in chosen], dtype=np.int64)
    return token_ids, np.array([w.sequence_id for w in chosen], dtype=np.int64), len(windows)


def library_version() -> dict[str, str]:
    """The code measured: `code_version()` and a digest of each source file the extraction runs."""
    import neuronatlas
    from neuronatlas.version import code_version

    package = Path(neuronatlas.__file__).parent
    files = [
        "adapters/extraction.py",
        "core/topk.py",
        "core/stats.py",
        "core/records.py",
        "datasets/activations.py",
        "tasks/extract.py",
    ]
    digests = {name: hashlib.sha256((package / name).read_bytes()).hexdigest()[:12] for name in files}
    return {"code_version": code_version(), **digests}


def load_subject() -> Any:
    import torch

    from neuronatlas.adapters.models import load_model, resolve_model

    return load_model(resolve_model(MODEL)).to(device="cpu", dtype=torch.float32).eval()


def make_pool(n_excerpts: int) -> np.ndarray:
    from neuronatlas.core.records import random_pool

    return random_pool(n_excerpts, POOL_SIZE, np.random.default_rng(SEED))


# -- the measures ------------------------------------------------------------------------------


def bare_forward(model: Any, token_ids: np.ndarray) -> float:
    """Seconds of the model body over every batch, no hooks."""
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(token_ids), BATCH_SIZE):
            ids = torch.as_tensor(token_ids[start : start + BATCH_SIZE], dtype=torch.long)
            model.model(input_ids=ids, use_cache=False)
    return time.perf_counter() - started


def extraction(
    model: Any,
    token_ids: np.ndarray,
    sequence_ids: np.ndarray,
    root: Path,
    on_batch: Callable[[int, int], None] | None = None,
    after_extract: Callable[[], None] | None = None,
    before_extract: Callable[[], None] | None = None,
) -> tuple[dict[str, float], str, dict[str, int]]:
    """extract() over all layers, then each layer's tables and their parquet files, as the flow
    does (less validation and commit). Seconds per phase, a fingerprint of the accumulators, sizes."""
    from neuronatlas.adapters.extraction import extract, mlp_layout
    from neuronatlas.adapters.storage import Storage
    from neuronatlas.datasets.activations import layer_tables

    layers = list(range(mlp_layout(model).n_layers))
    pool = make_pool(len(token_ids))
    storage = Storage.open(str(root))
    marks = {"extract": 0.0, "tables": 0.0, "write": 0.0}
    if before_extract is not None:
        before_extract()
    started = time.perf_counter()
    state = extract(
        model,
        token_ids,
        layers,
        k=TOP_K,
        bottom_candidates=BOTTOM_CANDIDATES,
        pool=pool,
        batch_size=BATCH_SIZE,
        device="cpu",
        on_batch=on_batch,
    )
    marks["extract"] = time.perf_counter() - started
    if after_extract is not None:
        after_extract()
    fingerprint = accumulators_fingerprint(state)
    sizes = {"records_rows": 0, "parquet_bytes": 0}
    for layer in layers:
        started = time.perf_counter()
        records, stats = layer_tables(state.pop(layer), pool, sequence_ids, TOP_K, RANDOM_K)
        marks["tables"] += time.perf_counter() - started
        started = time.perf_counter()
        storage.write_parquet(f"activations/layer={layer}/part-00000.parquet", records)
        storage.write_parquet(f"neuron_stats/layer={layer}/part-00000.parquet", stats)
        marks["write"] += time.perf_counter() - started
        sizes["records_rows"] += records.num_rows
    sizes["parquet_bytes"] = sum(f.stat().st_size for f in root.rglob("*.parquet"))
    marks["total"] = marks["extract"] + marks["tables"] + marks["write"]
    return marks, fingerprint, sizes


def accumulators_fingerprint(state: dict[int, Any]) -> str:
    """sha256 over every layer's kept excerpt indices (top, bottom) and token count."""
    digest = hashlib.sha256()
    for layer in sorted(state):
        accumulator = state[layer]
        digest.update(accumulator.top.indices.numpy().tobytes())
        digest.update(accumulator.bottom.indices.numpy().tobytes())
        digest.update(str(accumulator.stats.count).encode())
    return digest.hexdigest()[:16]


class PhaseTimer:
    """Seconds summed per named phase, and per-batch marks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.per_batch: dict[str, list[float]] = {"forward": [], "merge": []}
        """Per batch: seconds of the model body's own work, and of the merges its hooks ran."""

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def timed(self, function: Callable[..., Any], name: str) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self(name):
                return function(*args, **kwargs)

        return wrapper

    def timed_forward(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(forward)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            merged_before = self.merge_seconds()
            started = time.perf_counter()
            try:
                return forward(*args, **kwargs)
            finally:  # the last layer's hook ends it with _StopForwardError
                elapsed = time.perf_counter() - started
                merges = self.merge_seconds() - merged_before
                self.seconds[FORWARD] = self.seconds.get(FORWARD, 0.0) + elapsed
                self.per_batch["forward"].append(elapsed - merges)
                self.per_batch["merge"].append(merges)

        return wrapper

    def merge_seconds(self) -> float:
        return sum(seconds for name, seconds in self.seconds.items() if name in MERGES or name.startswith(MERGES))


FORWARD = "forward with capture hooks"
BODY = "forward: model body + hook glue (max/min, pool copy)"
MERGES = ("top merge", "bottom merge", "statistics")


@contextmanager
def instrumented(model: Any) -> Iterator[PhaseTimer]:
    """Timers around the library's own parts while `extraction()` runs them: the model body's
    forward (the capture hooks included), `RunningTopK.update` (top / bottom), `RunningStats.update`,
    and `layer_tables`' steps. Wrapped in place, never copied, so the breakdown follows the library."""
    from neuronatlas.adapters.extraction import mlp_layout
    from neuronatlas.core.stats import RunningStats
    from neuronatlas.core.topk import RunningTopK
    from neuronatlas.datasets import activations as contract

    timer = PhaseTimer()
    body = mlp_layout(model).body
    topk_update = RunningTopK.update

    def timed_topk_update(self: Any, *args: Any, **kwargs: Any) -> Any:
        with timer(f"top merge (K={self.k})" if self.largest else f"bottom merge (C={self.k})"):
            return topk_update(self, *args, **kwargs)

    patches: list[tuple[Any, str, Any]] = [
        (RunningTopK, "update", timed_topk_update),
        (RunningStats, "update", timer.timed(RunningStats.update, "statistics")),
        (contract, "layer_records", timer.timed(contract.layer_records, "layer_records")),
        (contract, "stats_table", timer.timed(contract.stats_table, "stats_table")),
        (contract, "records_table", timer.timed(contract.records_table, "records_table (incl. sort)")),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    body.forward = timer.timed_forward(body.forward)
    try:
        for owner, name, wrapper in patches:
            setattr(owner, name, wrapper)
        yield timer
    finally:
        del body.forward  # the instance attribute; the class's forward shows through again
        for owner, name, original in originals:
            setattr(owner, name, original)


def instrumented_extraction(
    model: Any, token_ids: np.ndarray, sequence_ids: np.ndarray, root: Path
) -> tuple[dict[str, float], dict[str, list[float]], str]:
    """`extraction()` once under the timers; seconds per part (the unwrapped rest as "other"),
    per-batch forward and merge seconds, and the accumulators' fingerprint."""
    with instrumented(model) as timer:
        marks, fingerprint, _ = extraction(model, token_ids, sequence_ids, root)
    inner = timer.seconds
    merges = [name for name in inner if name.startswith(("top merge", "bottom merge"))]
    # the merges run inside the forward pass, in each layer's hook
    parts = {BODY: inner.get(FORWARD, 0.0) - timer.merge_seconds()}
    parts.update({name: inner[name] for name in sorted(merges, reverse=True)})
    parts["statistics"] = inner.get("statistics", 0.0)
    parts["other extract (batch set-up, accumulators)"] = marks["extract"] - sum(parts.values())
    table_parts = {
        name: inner.get(name, 0.0) for name in ("layer_records", "stats_table", "records_table (incl. sort)")
    }
    parts.update(table_parts)
    parts["other tables (accumulator reads)"] = marks["tables"] - sum(table_parts.values())
    parts["write parquet"] = marks["write"]
    return parts, timer.per_batch, fingerprint


# -- peak memory in a fresh process ------------------------------------------------------------


def rss_now_mb() -> dict[str, float]:
    """VmRSS and VmHWM of this process, MiB (Linux)."""
    values: dict[str, float] = {}
    with suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024
    return values


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def ru_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_child(n_excerpts: int, ids_file: Path) -> None:
    """Load the model and N excerpts, reset the peak, run the full extraction; print JSON."""
    import torch

    model = load_subject()
    loaded = np.load(ids_file)
    token_ids, sequence_ids = loaded["token_ids"][:n_excerpts], loaded["sequence_ids"][:n_excerpts]
    after_load = {**rss_now_mb(), "ru_maxrss": ru_maxrss_mb()}
    peak_reset = reset_peak_rss()
    after_extract: dict[str, float] = {}

    def between_phases() -> None:  # the peak of extract() alone, then a fresh peak for tables + write
        after_extract.update(rss_now_mb())
        reset_peak_rss()

    root = Path(tempfile.mkdtemp(prefix="bench-extract-rss-"))
    try:
        started = time.perf_counter()
        marks, fingerprint, sizes = extraction(model, token_ids, sequence_ids, root, after_extract=between_phases)
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(root, ignore_errors=True)
    after = {**rss_now_mb(), "ru_maxrss": ru_maxrss_mb()}
    peaks = [after_extract.get("VmHWM", 0.0), after.get("VmHWM", 0.0)]
    load_peak = after_load.get("VmHWM", 0.0)
    report = {
        "excerpts": n_excerpts,
        "tokens": int(token_ids.size),
        "seconds": seconds,
        "phases_s": marks,
        "rss_after_load_mb": after_load.get("VmRSS"),
        "peak_during_load_mb": load_peak,
        "peak_reset_after_load": peak_reset,
        "peak_extraction_phase_mb": max(peaks) if peak_reset else None,
        "peak_extract_mb": peaks[0] if peak_reset else None,
        "rss_after_extract_mb": after_extract.get("VmRSS"),
        "peak_tables_write_mb": peaks[1] if peak_reset else None,
        "peak_process_mb": max(load_peak, *peaks) if peak_reset else after.get("VmHWM"),
        # Not the child's own peak: Linux carries the forking process's peak across fork + exec
        # into ru_maxrss (and so into the parent's RUSAGE_CHILDREN); VmHWM is this image's alone.
        "ru_maxrss_incl_parent_mb": after["ru_maxrss"],
        "rss_at_end_mb": after.get("VmRSS"),
        "threads": torch.get_num_threads(),
        "fingerprint": fingerprint,
        **sizes,
    }
    print("RSS-CHILD " + json.dumps(report), flush=True)


def run_rss_child(n_excerpts: int, ids_file: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--rss-child", str(n_excerpts), "--ids-file", str(ids_file)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("RSS-CHILD ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"rss child {n_excerpts} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("RSS-CHILD "))
    return {**report, "wall_s": wall}


# -- report ------------------------------------------------------------------------------------


def rate(tokens: int, seconds: float) -> float:
    return tokens / seconds


def main() -> None:
    args = parse_args()
    set_up_environment()
    if args.rss_child is not None:
        if args.ids_file is None:
            raise SystemExit("--rss-child needs --ids-file")
        rss_child(args.rss_child, args.ids_file)
        return
    scratch = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def timed_hooks(seconds: list[float]) -> Iterator[None]:
    """Add the time each capture hook of `extract()` takes (its merges and statistics) to
    `seconds[0]`: wraps the library's `_hooked`, in this process only."""
    from neuronatlas.adapters import extraction as library

    hooked = library._hooked

    @contextmanager
    def timed(layout: Any, layers: list[int], consume: Callable[[int, Any], None]) -> Iterator[None]:
        def timed_consume(layer: int, value: Any) -> None:
            started = time.perf_counter()
            try:
                consume(layer, value)
            finally:
                seconds[0] += time.perf_counter() - started

        with hooked(layout, layers, timed_consume):
            yield

    library._hooked = timed
    try:
        yield
    finally:
        library._hooked = hooked


def paired_round(
    model: Any,
    bare_model: Any,
    token_ids: np.ndarray,
    sequence_ids: np.ndarray,
    root: Path,
    bare_first: bool,
) -> tuple[dict[str, Any], str, dict[str, int]]:
    """One extraction with a bare forward of each batch run beside it: after the batch's
    extraction (`bare_first` False) or just before it. The bare forwards run on `bare_model`, a
    copy of the model without hooks, and their time is taken out of the extraction's.

    Pairing per batch, a few seconds apart, is what makes the ratio hold on a noisy machine: a
    slow minute slows both sides of the same batches, where whole passes minutes apart can
    differ by 5%."""
    bare_s: list[float] = []
    extract_s: list[float] = []
    hook_s: list[float] = []
    """Per batch, seconds spent in the capture hooks (merges, statistics), all layers."""
    in_hooks = [0.0]  # filled by `timed_hooks`
    done = 0
    last_mark = 0.0

    def bare(start: int, stop: int) -> None:
        import torch

        started = time.perf_counter()
        with torch.inference_mode():
            bare_model.model(input_ids=torch.as_tensor(token_ids[start:stop], dtype=torch.long), use_cache=False)
        bare_s.append(time.perf_counter() - started)

    def on_batch(n_done: int, _tokens: int) -> None:
        nonlocal done, last_mark
        extract_s.append(time.perf_counter() - last_mark)
        hook_s.append(in_hooks[0])
        in_hooks[0] = 0.0
        if not bare_first:
            bare(done, n_done)
        elif n_done < len(token_ids):
            bare(n_done, min(n_done + BATCH_SIZE, len(token_ids)))
        done = n_done
        last_mark = time.perf_counter()

    if bare_first:
        bare(0, min(BATCH_SIZE, len(token_ids)))

    def start_clock() -> None:
        nonlocal last_mark
        last_mark = time.perf_counter()

    with timed_hooks(in_hooks):
        marks, fingerprint, sizes = extraction(
            model, token_ids, sequence_ids, root, on_batch=on_batch, before_extract=start_clock
        )
    if len(bare_s) != len(extract_s):
        raise RuntimeError(f"{len(bare_s)} bare batches against {len(extract_s)} extracted")
    marks["extract"] = sum(extract_s)  # without the bare forwards run between its batches
    marks["total"] = marks["extract"] + marks["tables"] + marks["write"]
    marks["hooks"] = sum(hook_s)
    per_batch = {"bare": bare_s, "extract": extract_s, "hooks": hook_s}
    measured = {"marks": marks, "bare_s": sum(bare_s), "per_batch": per_batch}
    return measured, fingerprint, sizes


def paired_rounds(
    args: argparse.Namespace,
    model: Any,
    bare_model: Any,
    token_ids: np.ndarray,
    sequence_ids: np.ndarray,
    scratch: Path,
) -> tuple[list[dict[str, Any]], set[str], dict[str, int]]:
    """`paired_round` `args.rounds` times, the bare forward after each batch, then before it."""
    tokens = int(token_ids.size)
    rounds: list[dict[str, Any]] = []
    fingerprints: set[str] = set()
    sizes: dict[str, int] = {}
    for index in range(args.rounds):
        bare_first = index % 2 == 1
        root = scratch / f"round-{index}"
        measured, fingerprint, sizes = paired_round(model, bare_model, token_ids, sequence_ids, root, bare_first)
        shutil.rmtree(root, ignore_errors=True)
        rounds.append(measured)
        fingerprints.add(fingerprint)
        marks = measured["marks"]
        print(
            f"round {index + 1}/{args.rounds} (bare forward of each batch {'before' if bare_first else 'after'} "
            f"its extraction): bare {rate(tokens, measured['bare_s']):,.0f} tok/s | extraction "
            f"{rate(tokens, marks['total']):,.0f} tok/s (extract {marks['extract']:.1f} s, tables "
            f"{marks['tables']:.1f} s, write {marks['write']:.1f} s) | ratio "
            f"{measured['bare_s'] / marks['total']:.3f} | hooks {marks['hooks']:.1f} s; "
            "forward with hooks on, less their work, vs bare "
            f"{(marks['extract'] - marks['hooks']) / measured['bare_s']:.3f}",
            flush=True,
        )
    if len(fingerprints) != 1:
        raise RuntimeError(f"extraction rounds disagree: {sorted(fingerprints)}")
    return rounds, fingerprints, sizes


def peak_rss(
    n_excerpts: int, repeats: int, all_ids: np.ndarray, all_sequence_ids: np.ndarray, scratch: Path
) -> dict[str, Any]:
    """The full extraction of N and 4N excerpts, alternately, `repeats` times each, each in a fresh
    child; their peaks, and the ratio of the 4N to the N medians."""
    ids_file = scratch / "ids.npz"
    np.savez(ids_file, token_ids=all_ids, sequence_ids=all_sequence_ids)
    runs = []
    for _ in range(repeats):
        for n in (n_excerpts, 4 * n_excerpts):
            print(f"peak RSS: fresh child, full extraction of {n} excerpts...", flush=True)
            runs.append(run_rss_child(n, ids_file))
    summary: dict[str, Any] = {"runs": runs, "repeats": repeats, "target_ratio_max": 1.1}
    for key in ("peak_process_mb", "peak_extraction_phase_mb"):
        medians: list[float | None] = []
        for n in (n_excerpts, 4 * n_excerpts):
            values = [run[key] for run in runs if run["excerpts"] == n and run[key] is not None]
            medians.append(statistics.median(values) if values else None)
            summary[f"{key}_{n}"] = {
                "median": medians[-1],
                "min": min(values, default=None),
                "max": max(values, default=None),
            }
        small, large = medians
        summary[f"ratio_{key}_4n_to_n"] = large / small if small and large else None
    return summary


def run(args: argparse.Namespace, scratch: Path) -> None:
    import torch

    from neuronatlas.adapters.extraction import mlp_layout

    load_at_start = os.getloadavg()
    library = library_version()
    started = time.perf_counter()
    wanted = max(args.excerpts, 4 * args.rss_excerpts if not args.no_rss else 0)
    all_ids, all_sequence_ids, n_windows = corpus_windows(wanted)
    token_ids, sequence_ids = all_ids[: args.excerpts], all_sequence_ids[: args.excerpts]
    model = load_subject()
    layout = mlp_layout(model)
    tokens = int(token_ids.size)
    print(
        f"{SOURCE}: {n_windows:,} windows of {WINDOW}; first {args.excerpts} by sequence_id = {tokens:,} tokens | "
        f"{MODEL} fp32 cpu, {layout.n_layers} layers x {layout.d_mlp} neurons | torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads | k={TOP_K} bottom={BOTTOM_CANDIDATES} pool={POOL_SIZE} "
        f"batch={BATCH_SIZE} | set-up {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    # The bare forwards run on a copy: extract() hooks `model` while it runs.
    bare_model = copy.deepcopy(model)
    # Warm-up, not timed: first batches of each (allocator, kernels, imports of the table code).
    started = time.perf_counter()
    warm = min(len(token_ids), 2 * BATCH_SIZE)
    bare_forward(bare_model, token_ids[:warm])
    extraction(model, token_ids[:warm], sequence_ids[:warm], scratch / "warm-up")
    print(f"warm-up ({warm} excerpts each): {time.perf_counter() - started:.1f} s", flush=True)

    rounds, fingerprints, sizes = paired_rounds(args, model, bare_model, token_ids, sequence_ids, scratch)

    ratios = [measured["bare_s"] / measured["marks"]["total"] for measured in rounds]
    extract_ratios = [measured["bare_s"] / measured["marks"]["extract"] for measured in rounds]
    bare_s = statistics.median(measured["bare_s"] for measured in rounds)
    phases = {name: statistics.median(m["marks"][name] for m in rounds) for name in rounds[0]["marks"]}
    extraction_s = phases["total"]
    results: dict[str, Any] = {
        "source": SOURCE,
        "model": MODEL,
        "library": library,
        "dtype": "float32",
        "device": "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "layers": layout.n_layers,
        "d_mlp": layout.d_mlp,
        "window": WINDOW,
        "excerpts": args.excerpts,
        "tokens": tokens,
        "parameters": {
            "k": TOP_K,
            "bottom_candidates": BOTTOM_CANDIDATES,
            "random_k": RANDOM_K,
            "pool": POOL_SIZE,
            "batch_size": BATCH_SIZE,
            "seed": SEED,
        },
        "rounds": args.rounds,
        "pairing": "per batch: a bare forward of each batch beside its extraction, after it in odd rounds, "
        "before it in even ones",
        "bare_forward": {
            "median_s": bare_s,
            "tokens_per_s": rate(tokens, bare_s),
            "runs_s": [m["bare_s"] for m in rounds],
        },
        "extraction": {
            "median_s": extraction_s,
            "tokens_per_s": rate(tokens, extraction_s),
            "runs": [m["marks"] for m in rounds],
            "median_phases_s": phases,
            **sizes,
        },
        "ratio_extraction_to_bare": statistics.median(ratios),
        "ratio_extract_only_to_bare": statistics.median(extract_ratios),
        "paired_ratios": ratios,
        "per_batch_s": [m["per_batch"] for m in rounds],
        "target_ratio": 0.9,
    }

    breakdown: dict[str, float] | None = None
    if not args.no_breakdown:
        print("instrumented pass (the same extraction, timers around the library's parts)...", flush=True)
        started = time.perf_counter()
        breakdown, per_batch, fingerprint = instrumented_extraction(
            model, token_ids, sequence_ids, scratch / "breakdown"
        )
        total = time.perf_counter() - started
        if fingerprint not in fingerprints:
            raise RuntimeError("the instrumented copy of extract() kept other excerpts than extract()")
        results["breakdown"] = {"total_s": total, "parts_s": breakdown, "per_batch_s": per_batch}

    rss: list[dict[str, Any]] = []
    if not args.no_rss:
        results["peak_rss"] = peak_rss(args.rss_excerpts, args.rss_repeats, all_ids, all_sequence_ids, scratch)
        rss = results["peak_rss"]["runs"]

    results["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
    }
    results["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if library_version() != library:
        results["library_at_end"] = library_version()
        print("WARNING: the library's sources changed during the run; the numbers mix two versions")
    print_summary(results, breakdown, rss)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


def print_summary(results: dict[str, Any], breakdown: dict[str, float] | None, rss: list[dict[str, Any]]) -> None:
    tokens, bare_s = results["tokens"], results["bare_forward"]["median_s"]
    phases = results["extraction"]["median_phases_s"]

    def row(name: str, seconds: float, ratio: float) -> str:
        return f"  {name:<34} {seconds:>8.2f} s {rate(tokens, seconds):>9,.0f} tok/s {ratio:>7.3f}"

    print()
    print(
        f"median of {results['rounds']} rounds paired per batch, {tokens:,} tokens, {results['layers']} layers, "
        f"torch {results['torch']} {results['threads']} threads fp32 cpu:"
    )
    # times: medians over rounds; bare/x: median over rounds of each round's paired ratio
    print(f"  {'':<34} {'time':>10} {'rate':>15} {'bare/x':>7}")
    print(row("bare forward (no hooks)", bare_s, 1.0))
    print(row("extraction: extract + tables + write", phases["total"], results["ratio_extraction_to_bare"]))
    print(row("  extract() only", phases["extract"], results["ratio_extract_only_to_bare"]))
    print(f"  {'  tables (layer_tables)':<34} {phases['tables']:>8.2f} s")
    print(f"  {'  write (2 parquet x layer)':<34} {phases['write']:>8.2f} s")
    ratio = results["ratio_extraction_to_bare"]
    verdict = "meets" if ratio >= results["target_ratio"] else "BELOW"
    rounds = ", ".join(f"{r:.3f}" for r in results["paired_ratios"])
    print(f"  ratio extraction / bare = {ratio:.3f}, median of rounds {rounds} ({verdict} the 0.9 target)")
    if breakdown is not None:
        total = sum(breakdown.values())
        forward = breakdown[BODY]
        print()
        print(
            f"instrumented pass, {total:.2f} s in all (forward without merges vs bare median: {forward / bare_s:.3f}):"
        )
        for name, seconds in breakdown.items():
            print(f"  {name:<54} {seconds:>8.2f} s {100 * seconds / total:>5.1f} %")
        per_batch = results["breakdown"]["per_batch_s"]
        print(
            "  per batch, merge / forward: "
            + " ".join(f"{m / f:.2f}" for f, m in zip(per_batch["forward"], per_batch["merge"], strict=True))
        )
    if rss:
        print()
        print("peak RSS of a fresh process running the full extraction (MiB; VmHWM):")
        print(
            f"  {'excerpts':>8} {'after load':>11} {'load peak':>10} {'extract() peak':>15} {'tables+write peak':>18}"
            f" {'process peak':>13}"
        )
        nan = float("nan")
        for run in rss:
            print(
                f"  {run['excerpts']:>8} {run['rss_after_load_mb']:>11.0f} {run['peak_during_load_mb']:>10.0f} "
                f"{run['peak_extract_mb'] or nan:>15.0f} {run['peak_tables_write_mb'] or nan:>18.0f} "
                f"{run['peak_process_mb']:>13.0f}"
            )
        peak = results["peak_rss"]
        ratio = peak["ratio_peak_process_mb_4n_to_n"]
        spread = "" if peak["repeats"] > 1 else " (1 child per size: see --rss-repeats)"
        print(
            f"  4N / N, medians: process peak {ratio:.3f}, extraction-phase peak "
            f"{peak['ratio_peak_extraction_phase_mb_4n_to_n'] or nan:.3f} (target <= 1.10){spread}"
        )


if __name__ == "__main__":
    main()
