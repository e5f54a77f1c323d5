"""Ingestion throughput beside tokenizer-only throughput, on the same text, in one run.

    .venv/bin/python bench/ingest.py [--rounds 3] [--no-flow]

Text: the default corpus source (`wiki-vital-en`), tokenised with the default model's tokenizer.

- tokenizer-only: `tokenizer.encode` over exactly the texts the pipeline encodes (unique,
  non-empty, normalised documents), in batches of 512, as `build_windows` does.
- ingest pipeline: what the `ingest_corpus` flow does per corpus, without Prefect: build_windows,
  contract.to_table, the parts written to staging in a fresh local root (`stage_corpus`), the
  corpus suite on the staged files (`validate_corpus`), the manifest and the commit.
- ingest flow (optional, once): a full `ingest_corpus` run (ephemeral Prefect, its own source
  read and tokenizer load) into a fresh root, after a trivial flow has started Prefect's server.

The machine is noisy: the two measures alternate within each round (the order flips every
round) and the median of each is reported. Every rate counts the same tokens: those the
tokenizer produced for the corpus's documents (`tokens_read`), so the ratio is a ratio of times.
Writes the numbers to bench/results/ingest.json.
"""

import argparse
import importlib
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
SOURCE = "wiki-vital-en"
MODEL = "smollm2-135m"
WINDOW = 64
BATCH_SIZE = 512  # build_windows' default, as the pipeline calls it


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both measures (default 3)")
    parser.add_argument("--no-flow", action="store_true", help="skip the full Prefect flow run")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def set_up_environment(prefect_home: Path) -> None:
    """Offline, quiet, and a Prefect home of this run's own (ephemeral server), before any import."""
    os.environ.setdefault("PREFECT_HOME", str(prefect_home))
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from neuronatlas.runtime import configure_environment

    configure_environment()
    # Great Expectations sets this module's logger to INFO itself; import it, then quieten it.
    importlib.import_module("great_expectations.data_context.types.base")
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)


def tokenizer_only(texts: list[str], tokenizer: Any) -> tuple[float, int]:
    """Seconds to encode `texts` in pipeline-sized batches, and the tokens produced."""
    started = time.perf_counter()
    tokens = 0
    for start in range(0, len(texts), BATCH_SIZE):
        tokens += sum(len(ids) for ids in tokenizer.encode(texts[start : start + BATCH_SIZE]))
    return time.perf_counter() - started, tokens


def ingest_pipeline(loaded: Any, tokenizer: Any, root: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """The flow's per-corpus work with the functions its tasks call; seconds per phase, and counts."""
    from neuronatlas.adapters.storage import Storage
    from neuronatlas.adapters.validation import Check
    from neuronatlas.core.corpus import build_windows
    from neuronatlas.datasets import corpus as contract
    from neuronatlas.expectations import corpus as corpus_suite
    from neuronatlas.tasks.commit import DatasetWrite, stage_datasets, validate_staged
    from neuronatlas.version import code_version

    storage = Storage.open(str(root))
    corpus_id = contract.corpus_id(loaded.label, loaded.fingerprint, tokenizer.source.slug, tokenizer.identity, WINDOW)
    dataset = contract.corpus_path(corpus_id)
    marks = [time.perf_counter()]
    windows, stats = build_windows(loaded.documents, tokenizer.encode, tokenizer.token_strings, WINDOW)
    marks.append(time.perf_counter())
    table = contract.to_table(windows, loaded.label)
    marks.append(time.perf_counter())
    check = Check("corpus", corpus_suite.validation_frame, corpus_suite.suite(WINDOW, tokenizer.vocab_size))
    write = DatasetWrite("corpus", dataset, contract.parts(table), contract.SCHEMA, check)
    staged = stage_datasets.fn(storage, [write])
    marks.append(time.perf_counter())
    reports = validate_staged.fn(storage, staged, [write], "corpus")
    marks.append(time.perf_counter())
    context = {"code_version": code_version(), "prefect_flow_run_id": ""}
    manifest = contract.corpus_manifest(
        corpus_id, loaded, tokenizer, WINDOW, table, stats, reports["corpus"], {}, context
    )
    storage.commit(staged["corpus"], dataset, manifest)  # what commit_staged does, without its run logger
    marks.append(time.perf_counter())
    if not storage.is_committed(dataset):
        raise RuntimeError(f"{storage.uri(dataset)}: not committed after the pipeline ran")
    names = ["tokenize_and_window", "to_table", "write_staging", "validate", "manifest_and_commit"]
    phases = {name: marks[i + 1] - marks[i] for i, name in enumerate(names)}
    phases["total"] = marks[-1] - marks[0]
    return phases, {"tokens_read": stats.tokens_read, "rows": table.num_rows, "stats": asdict(stats)}


def flow_run(scratch: Path) -> dict[str, Any]:
    """Prefect's start-up (a trivial flow), then one full `ingest_corpus` run into a fresh root."""
    from prefect import flow

    from neuronatlas.adapters.storage import Storage
    from neuronatlas.datasets import corpus as contract
    from neuronatlas.flows.ingest import ingest_corpus

    @flow(name="bench_warm_up")
    def warm_up() -> int:
        return 1

    started = time.perf_counter()
    warm_up()
    start_up = time.perf_counter() - started
    root = scratch / "flow-root"
    started = time.perf_counter()
    result = ingest_corpus(source=SOURCE, root=str(root), tokenizer_of=MODEL, window=WINDOW)
    seconds = time.perf_counter() - started
    if not result.created:
        raise RuntimeError(f"{result.uri}: the flow found the corpus already there in a fresh root")
    manifest = Storage.open(str(root)).manifest(contract.corpus_path(result.corpus_id))
    tokens = int(manifest["counts"]["tokens_read"])
    return {
        "prefect_start_up_s": start_up,
        "seconds": seconds,
        "tokens_read": tokens,
        "tokens_per_s": tokens / seconds,
        "flow_timings_s": manifest["timings_s"],
    }


def rate(tokens: int, seconds: float) -> str:
    return f"{tokens / seconds:>12,.0f} tok/s"


def main() -> None:
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        set_up_environment(scratch / "prefect-home")
        run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, scratch: Path) -> None:
    from neuronatlas.adapters.models import open_tokenizer
    from neuronatlas.adapters.sources import SourceSpec, read_source
    from neuronatlas.core.corpus import CorpusStats, normalise_text, unique_documents

    started = time.perf_counter()
    loaded = read_source(SourceSpec(SOURCE))
    tokenizer = open_tokenizer(MODEL)
    texts = [normalise_text(document.text) for document, _ in unique_documents(loaded.documents, CorpusStats())]
    print(
        f"{SOURCE}: {len(loaded.documents):,} documents ({len(texts):,} unique); tokenizer of {MODEL}; "
        f"window {WINDOW}; batch {BATCH_SIZE}; set-up {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    # Warm-up, not timed: imports, Great Expectations' context, the tokenizer's first batches.
    started = time.perf_counter()
    tokenizer_only(texts[:BATCH_SIZE], tokenizer)
    ingest_pipeline(loaded, tokenizer, scratch / "warm-up")
    warm_up_s = time.perf_counter() - started
    print(f"warm-up (first pipeline run: imports, GE context): {warm_up_s:.1f} s", flush=True)

    tokenizer_runs: list[float] = []
    pipeline_runs: list[dict[str, float]] = []
    tokens = 0
    for index in range(args.rounds):
        order = ["tokenizer", "pipeline"] if index % 2 == 0 else ["pipeline", "tokenizer"]
        for which in order:
            if which == "tokenizer":
                seconds, produced = tokenizer_only(texts, tokenizer)
                tokenizer_runs.append(seconds)
            else:
                phases, counts = ingest_pipeline(loaded, tokenizer, scratch / f"round-{index}")
                shutil.rmtree(scratch / f"round-{index}", ignore_errors=True)
                pipeline_runs.append(phases)
                produced = counts["tokens_read"]
            if tokens and produced != tokens:
                raise RuntimeError(f"{which}: {produced} tokens, other runs {tokens}: not the same text")
            tokens = produced
        print(
            f"round {index + 1}/{args.rounds} ({' then '.join(order)}): tokenizer {rate(tokens, tokenizer_runs[-1])}"
            f" | pipeline {rate(tokens, pipeline_runs[-1]['total'])}",
            flush=True,
        )

    tokenizer_s = statistics.median(tokenizer_runs)
    pipeline_s = statistics.median(run["total"] for run in pipeline_runs)
    tokenizer_rate, pipeline_rate = tokens / tokenizer_s, tokens / pipeline_s
    phases = {name: statistics.median(run[name] for run in pipeline_runs) for name in pipeline_runs[0]}
    results: dict[str, Any] = {
        "source": SOURCE,
        "model": MODEL,
        "window": WINDOW,
        "batch_size": BATCH_SIZE,
        "documents": len(loaded.documents),
        "unique_documents": len(texts),
        "tokens": tokens,
        "rounds": args.rounds,
        "tokenizer_only": {"median_s": tokenizer_s, "tokens_per_s": tokenizer_rate, "runs_s": tokenizer_runs},
        "ingest_pipeline": {
            "median_s": pipeline_s,
            "tokens_per_s": pipeline_rate,
            "runs_s": [run["total"] for run in pipeline_runs],
            "median_phases_s": phases,
        },
        "ratio_pipeline_to_tokenizer": pipeline_rate / tokenizer_rate,
        "paired_ratios": [t / p["total"] for t, p in zip(tokenizer_runs, pipeline_runs, strict=True)],
        "warm_up_s": warm_up_s,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    flow: dict[str, Any] | None = None
    if not args.no_flow:
        print("running one full ingest_corpus flow (ephemeral Prefect)...", flush=True)
        flow = flow_run(scratch)
        if flow["tokens_read"] != tokens:
            raise RuntimeError(f"the flow read {flow['tokens_read']} tokens, the pipeline {tokens}")
        results["ingest_flow"] = {**flow, "ratio_to_tokenizer": flow["tokens_per_s"] / tokenizer_rate}

    print()
    print(f"median of {args.rounds} interleaved rounds, {tokens:,} tokens each:")
    print(
        f"tokenizer-only {tokenizer_rate:,.0f} tok/s ({tokenizer_s:.2f} s) | "
        f"ingest pipeline {pipeline_rate:,.0f} tok/s ({pipeline_s:.2f} s) | "
        f"ratio M/N = {pipeline_rate / tokenizer_rate:.2f}"
    )
    print("pipeline phases (median s): " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in phases.items()))
    if flow is not None:
        print(
            f"ingest flow (1 run, Prefect orchestration, own source read and tokenizer load) "
            f"{flow['tokens_per_s']:,.0f} tok/s ({flow['seconds']:.2f} s) | ratio to tokenizer-only = "
            f"{flow['tokens_per_s'] / tokenizer_rate:.2f} | Prefect server start-up {flow['prefect_start_up_s']:.1f} s"
            " (not counted)"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
