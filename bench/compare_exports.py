"""Are two exports of the published table the same by content? For a change that must not change
results: export `make run`'s table before and after it, then

    python bench/compare_exports.py before.parquet after.parquet

prints, per column, whether the two agree (rows matched by model, layer, neuron and sign), and
exits 1 when any column other than those that name the run itself (when it was published, by
which code version and Prefect flow run) differs.
"""

import sys

import polars as pl

KEY = ["model", "layer", "neuron", "sign"]
OF_THE_RUN = {"published_at", "code_version", "prefect_flow_run_id"}
"""Columns that differ between any two runs, whatever they computed."""


def main(before_path: str, after_path: str) -> int:
    before = pl.read_parquet(before_path).sort(KEY)
    after = pl.read_parquet(after_path).sort(KEY)
    print(f"rows: {before.height} before, {after.height} after")
    if before.columns != after.columns or before.select(KEY).to_dicts() != after.select(KEY).to_dicts():
        print("different columns or different neurons")
        return 1
    differing = []
    for column in before.columns:
        same = before[column].equals(after[column])
        kind = "of the run" if column in OF_THE_RUN else "content"
        print(f"  {column:<32} {'same' if same else 'DIFFERENT'} ({kind})")
        if not same and column not in OF_THE_RUN:
            differing.append(column)
    compared = len(before.columns) - len(OF_THE_RUN)
    print(f"content columns: {compared - len(differing)} of {compared} identical")
    return 1 if differing else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
