"""Lineage: from a score run back to its corpus (scores -> explanations -> activations -> corpus),
each dataset with its manifest and whether every partition it was read from passed its suites."""

from dataclasses import dataclass, field
from typing import Any

from neuronatlas.adapters.data_docs import ValidationEntry
from neuronatlas.adapters.storage import Storage
from neuronatlas.catalog.runs import find_activation_run
from neuronatlas.datasets import activations as activations_contract
from neuronatlas.datasets import corpus as corpus_contract
from neuronatlas.datasets import explanations as contract
from neuronatlas.errors import InputError, ValidationFailedError

SHOWN: tuple[str, ...] = ("model", "model_checksum", "hf_id", "explainer", "simulator", "parameters", "code_version",
                         "prefect_flow_run_id", "created_at", "corpus_fingerprint", "activations_run",
                         "explanations_run")  # fmt: skip
"""Manifest entries a lineage shows for each dataset."""


@dataclass
class Link:
    """One dataset in a lineage chain: where it is, its manifest, and its suites' outcome per
    partition (layer, or the whole dataset)."""

    dataset: str
    run_id: str
    uri: str
    manifest: dict[str, Any]
    validation: dict[str, bool] = field(default_factory=dict)
    """Partition -> did every suite pass ("missing" partitions count as failed)."""

    @property
    def passed(self) -> bool:
        return bool(self.validation) and all(self.validation.values())

    def summary(self) -> dict[str, Any]:
        keep = SHOWN
        source = self.manifest.get("source")
        if isinstance(source, dict):  # the corpus: what it was read from
            keep += ("source", "tokenizer", "window")
            source = {k: source.get(k) for k in ("label", "kind", "distribution", "package_version", "fingerprint")}
        return {
            "dataset": self.dataset,
            "run_id": self.run_id,
            "uri": self.uri,
            **{name: self.manifest[name] for name in keep if name in self.manifest},
            **({"source": source} if isinstance(source, dict) else {}),
            "validation": "passed" if self.passed else "FAILED",
            "partitions_validated": len(self.validation),
            "failed_partitions": sorted(name for name, ok in self.validation.items() if not ok),
        }


def _partitions_passed(storage: Storage, path: str, layers: list[int]) -> dict[str, bool]:
    outcome = {}
    for layer in layers:
        partition = activations_contract.layer_partition(path, layer)
        if not storage.is_committed(partition):
            outcome[f"layer={layer}"] = False
            continue
        reports = storage.manifest(partition).get("validation", {})
        outcome[f"layer={layer}"] = bool(reports) and all(report["success"] for report in reports.values())
    return outcome


def lineage_chain(storage: Storage, scores_run: str) -> list[Link]:
    """From a score run back to its corpus: scores -> explanations -> activations -> corpus,
    each with its manifest and whether every partition it was read from passed its suites."""
    scores = contract.scores_path(scores_run)
    if not storage.is_committed(scores):
        raise InputError(f"scores run {scores_run}: not committed under {storage.uri()}")
    score_manifest = storage.manifest(scores)
    # every layer folder, committed or not: one that is not committed fails the upstream check
    layers = sorted(int(name.removeprefix("layer=")) for name in storage.list(scores) if name.startswith("layer="))
    explanations_run = score_manifest["explanations_run"]
    explanations = contract.explanations_path(explanations_run)
    explanation_manifest = storage.manifest(explanations)
    activation_run = find_activation_run(storage, score_manifest["activations_run"])
    corpus_id = activation_run.manifest["corpus_id"]
    corpus = corpus_contract.corpus_path(corpus_id)
    corpus_manifest = storage.manifest(corpus)
    corpus_validation = corpus_manifest.get("validation", {})
    activation_link = Link(
        "activations", activation_run.run_id, storage.uri(activation_run.records), activation_run.manifest
    )
    activation_link.validation = _partitions_passed(storage, activation_run.records, activation_run.layers)
    activation_link.manifest = {**activation_run.manifest, "neuron_stats": storage.uri(activation_run.stats)}
    return [
        Link("scores", scores_run, storage.uri(scores), score_manifest, _partitions_passed(storage, scores, layers)),
        Link(
            "explanations",
            explanations_run,
            storage.uri(explanations),
            explanation_manifest,
            _partitions_passed(storage, explanations, layers),
        ),
        activation_link,
        Link(
            "corpus", corpus_id, storage.uri(corpus), corpus_manifest, {"whole": bool(corpus_validation.get("success"))}
        ),
    ]


def validation_entries(storage: Storage, chain: list[Link]) -> list[ValidationEntry]:
    """Every suite result the chain's datasets recorded (partition by partition), for Data Docs;
    results committed before they were kept whole are left out."""
    entries = []
    for link in chain:
        if link.dataset == "corpus":
            report = link.manifest.get("validation", {})
            if report.get("ge_result"):
                entries.append(ValidationEntry("corpus", link.run_id, report["ge_result"]))
            continue
        base = link.uri.removeprefix(storage.uri()).strip("/")
        for partition in sorted(link.validation):
            if not storage.is_committed(f"{base}/{partition}"):
                continue
            for name, report in storage.manifest(f"{base}/{partition}").get("validation", {}).items():
                if report.get("ge_result"):
                    entries.append(
                        ValidationEntry(report.get("suite", name), f"{link.run_id} {partition}", report["ge_result"])
                    )
    return entries


def check_upstream(chain: list[Link]) -> None:
    """Refuse to publish unless every upstream dataset passed its suites."""
    failed = [
        f"upstream suite not passed: {link.dataset} {link.run_id} {part}"
        for link in chain
        for part, ok in link.validation.items()
        if not ok
    ]
    failed += [f"no validated partition: {link.dataset} {link.run_id}" for link in chain if not link.validation]
    if failed:
        raise ValidationFailedError("publish", failed)
