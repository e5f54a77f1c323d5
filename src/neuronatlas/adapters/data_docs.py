"""Great Expectations Data Docs for the validations behind a run, written under the root.

Every suite's result is kept (as Great Expectations' own JSON) in the manifest of the dataset it
validated; this renders those results with Great Expectations' site builder into a temporary
folder and copies the site under the storage root (a local folder or S3 alike). Offline, the
pages' CSS and scripts from CDNs do not load: the pages render unstyled but complete.
"""

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuronatlas.adapters.storage import Storage

DOCS = "data_docs"
SITE = "neuronatlas"  # not "local_site": Great Expectations reserves that name
WALKTHROUGH = {"glossary_scroller.gif", "validation_failed_unexpected_values.gif", "iterative-dev-loop.png"}
"""Images of Great Expectations' getting-started walkthrough (3.4 of the site's 4.9 MB): not copied."""


@dataclass(frozen=True)
class ValidationEntry:
    suite: str
    """The dataset's suite, e.g. "scores"."""
    run_name: str
    """Which run and partition, e.g. "s-0123abcd layer=5"."""
    result: dict[str, Any]
    """Great Expectations' validation result, as JSON."""


def build_data_docs(storage: Storage, target: str, entries: list[ValidationEntry]) -> str:
    """Render `entries` as a Data Docs site at `target` under the root; returns its index's URI."""
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResultSchema
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    schema = ExpectationSuiteValidationResultSchema()
    with tempfile.TemporaryDirectory() as folder:
        site = Path(folder)
        context.add_data_docs_site(
            site_name=SITE,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        for number, entry in enumerate(entries):
            key = ValidationResultIdentifier(
                expectation_suite_identifier=ExpectationSuiteIdentifier(name=entry.suite),
                run_id=RunIdentifier(run_name=entry.run_name, run_time=entry.result["meta"].get("validation_time")),
                batch_identifier=f"{number:04d}",
            )
            context.validation_results_store.set(key, schema.load(entry.result))
        context.build_data_docs(site_names=[SITE])
        # the index last: a site whose index is there is whole (a build killed midway is redone)
        for path in sorted(site.rglob("*"), key=lambda p: (p.name == "index.html" and p.parent == site, str(p))):
            if path.is_file() and not _walkthrough_image(path.relative_to(site)):
                storage.write_bytes(f"{target}/{path.relative_to(site).as_posix()}", path.read_bytes())
    return storage.uri(f"{target}/index.html")


def docs_folder(entries: list[ValidationEntry]) -> str:
    """Where the Data Docs of exactly these validation results live under the root: named by their
    content, so a run whose datasets and suites are those of an earlier run (a nightly rerun that
    changed nothing) finds that site instead of writing another."""
    key = json.dumps([[e.suite, e.run_name, e.result] for e in entries], sort_keys=True, default=str)
    return f"{DOCS}/{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _walkthrough_image(relative: Path) -> bool:
    return relative.parts[:2] == ("static", "images") and relative.name in WALKTHROUGH
