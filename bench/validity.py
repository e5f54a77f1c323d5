"""The validity harness (issue 5) on the embedded default, printing the report's table.

    .venv/bin/python bench/validity.py [--root ./atlas] [--neurons 24] [--layers auto]
        [--formats pairs,tokens] [--samples 2] [--scorers simulation,embedding]
        [--methods auto|line-by-line,all-at-once] [--no-oracles]

Needs a root with a committed activation run (`make run` makes one: smollm2-135m, all 30 layers,
2,048 excerpts). Runs `neuronatlas validity`'s flow: explains `--neurons` neurons spread evenly over
3 layers with the local Qwen2.5-Coder-1.5B in each prompt format, scores them with every scorer
against the permutation null (another neuron's records), adds the token-lookup baseline and the
oracle neurons, and writes `validity/<run>/report.md`, `gaps.png` and the manifest under the root.
Every answer is cached under the root: a rerun only recomputes what changed. Wall time per stage
and the report's path go to bench/results/validity-<run>.json.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from neuronatlas.config import ScoreConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="./atlas")
    parser.add_argument("--neurons", type=int, default=24)
    parser.add_argument("--layers", default="auto")
    parser.add_argument("--formats", default="pairs,tokens")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--scorers", default=ScoreConfig().scorers)
    parser.add_argument("--methods", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-oracles", action="store_true")
    args = parser.parse_args()

    from neuronatlas.runtime import configure_environment

    configure_environment()
    from neuronatlas.errors import AtlasError
    from neuronatlas.flows.validity import validity

    started = time.perf_counter()
    try:
        result = validity(
            root=args.root,
            layers=args.layers,
            neurons=args.neurons,
            formats=args.formats,
            samples=args.samples,
            scorers=args.scorers,
            methods=args.methods,
            seed=args.seed,
            oracles=not args.no_oracles,
        )
    except AtlasError as error:
        sys.exit(f"error: {error}")
    seconds = time.perf_counter() - started
    print(result.report)
    print(f"report: {result.report_uri}\npicture: {result.plot_uri}\nwall time: {seconds / 60:.1f} min")
    out = Path(__file__).parent / "results" / f"validity-{result.run_id}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "arguments": vars(args),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "run_id": result.run_id,
                "report": result.report_uri,
                "rows": result.rows,
                "wall_s": round(seconds, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
