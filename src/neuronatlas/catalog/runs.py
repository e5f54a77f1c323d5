"""Finding committed runs under a root: corpora, activation runs, explanation and score runs.

A dataset counts once its `_manifest.json` is written (`Storage.commit`); a run named on the
command line that is not committed is an `InputError` naming what is there.
"""

from dataclasses import dataclass
from typing import Any

from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import activations as activations_contract
from neuronatlas.errors import InputError


def committed(storage: Storage, dataset: str) -> list[str]:
    """The committed runs of a top-level dataset folder (corpus, explanations, scores)."""
    return [name for name in storage.list(dataset) if storage.is_committed(f"{dataset}/{name}")]


def committed_run(storage: Storage, dataset: str, run: str | None, command: str) -> str:
    """The named committed run of `dataset`, or the only one there."""
    found = committed(storage, dataset)
    if run is None and len(found) == 1:
        return found[0]
    if run is not None and run in found:
        return run
    what = f"--{dataset} {run}: no run of that id" if run else f"--{dataset}: name one"
    raise InputError(f"{what} under {storage.uri()} (found: {', '.join(found) or 'none'}); run `neuronatlas {command}`")


def committed_corpus(storage: Storage, corpus: str | None) -> str:
    """The named committed corpus, or the only one under the root."""
    found = committed(storage, "corpus")
    if corpus is None:
        if len(found) != 1:
            names = ", ".join(found) or "none"
            raise InputError(f"--corpus: name one of the committed corpora under {storage.uri()} (found: {names})")
        return found[0]
    if corpus not in found:
        raise InputError(
            f"--corpus {corpus}: no committed corpus of that id under {storage.uri()}; see `neuronatlas corpora`"
        )
    return corpus


def committed_layers(storage: Storage, dataset: str) -> list[int]:
    """The layers of a layer-partitioned dataset whose partition is committed."""
    return sorted(
        int(name.removeprefix("layer="))
        for name in storage.list(dataset)
        if name.startswith("layer=") and storage.is_committed(f"{dataset}/{name}")
    )


@dataclass(frozen=True)
class ActivationRun:
    """A committed extraction run, as its manifest describes it."""

    run_id: str
    records: str
    """Storage path of the records dataset."""
    manifest: dict[str, Any]

    @property
    def layers(self) -> list[int]:
        return list(self.manifest["layers"])

    @property
    def d_mlp(self) -> int:
        return int(self.manifest["d_mlp"])

    @property
    def stats(self) -> str:
        """Storage path of the neuron statistics dataset."""
        return activations_contract.stats_path(self.manifest["model_slug"], self.run_id)


def activation_runs(storage: Storage) -> list[tuple[str, str]]:
    """(run id, model slug) of every committed activation run, of any model."""
    found = []
    for slug in storage.list("activations"):
        for name in storage.list(f"activations/{slug}"):
            if storage.is_committed(activations_contract.records_path(slug, name)):
                found.append((name, slug))
    return found


def find_activation_run(storage: Storage, run: str | None) -> ActivationRun:
    """The named committed activation run, or the only one under the root."""
    found = [(name, activations_contract.records_path(slug, name)) for name, slug in activation_runs(storage)]
    if run is None and len(found) == 1:
        name, path = found[0]
    else:
        matches = [(name, path) for name, path in found if name == run]
        if not matches:
            names = ", ".join(name for name, _ in found) or "none"
            what = f"--activations {run}: no committed activation run of that id" if run else "--activations: name one"
            raise InputError(f"{what} under {storage.uri()} (found: {names}); run `neuronatlas extract` first")
        name, path = matches[0]
    manifest = storage.manifest(path)
    if "d_mlp" not in manifest:  # runs committed before d_mlp was recorded: read it off the stats
        stats_path = activations_contract.stats_path(manifest["model_slug"], name)
        layer = manifest["layers"][0]
        manifest["d_mlp"] = storage.read_parquet(activations_contract.layer_partition(stats_path, layer)).num_rows
    return ActivationRun(name, path, manifest)


def needs_work(storage: Storage, partition: str) -> bool:
    """A layer partition of an LLM stage to (re)do: not committed, or committed with failures
    worth retrying (failed or refused LLM calls; answers that did not parse are final)."""
    return not storage.is_committed(partition) or storage.manifest(partition).get("retryable_failures", 0) > 0
