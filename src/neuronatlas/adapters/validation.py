"""Run a Great Expectations suite on a pandas frame, in an ephemeral context."""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import great_expectations as gx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """How a dataset is validated: its suite's name, the frame it checks, the suite."""

    dataset: str
    """The name its results carry (in manifests and Data Docs)."""
    frame: Callable[[Any], pd.DataFrame]
    """The table as written -> the pandas frame the suite runs on."""
    suite: Any


@dataclass
class ValidationReport:
    """The outcome of one suite on one dataset, small enough for a manifest."""

    dataset: str
    suite: str
    success: bool
    rows: int
    results: list[dict[str, Any]] = field(default_factory=list)
    """One entry per expectation: name, arguments, success, unexpected count and examples."""
    ge_result: dict[str, Any] | None = None
    """Great Expectations' own validation result (JSON), from which Data Docs are rendered."""

    def failed(self) -> list[str]:
        """One readable line per failed expectation."""
        return [
            f"{result['expectation']}({result['arguments']}): {result['unexpected_count']} unexpected"
            + (f", e.g. {result['examples']}" if result["examples"] else "")
            for result in self.results
            if not result["success"]
        ]

    def to_manifest(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "success": self.success,
            "rows": self.rows,
            "results": self.results,
            "ge_result": self.ge_result,
        }


@cache
def _context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def run_suite(dataset: str, frame: pd.DataFrame, suite: "gx.ExpectationSuite") -> ValidationReport:
    """Validate `frame` against `suite` and summarise every expectation's result."""
    import great_expectations as gx

    context = _context()
    name = f"{dataset}-{uuid.uuid4().hex[:8]}"
    source = context.data_sources.add_pandas(name)
    batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(name)
    suite.name = name
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    try:
        outcome = definition.run(batch_parameters={"dataframe": frame})
    finally:
        context.validation_definitions.delete(name)
        context.suites.delete(name)
        context.data_sources.delete(name)
    results = [_summarise(result) for result in outcome.results]
    report = ValidationReport(dataset, dataset, bool(outcome.success), len(frame), results, outcome.to_json_dict())
    log.info("validated %s: %s (%d expectations)", dataset, "passed" if report.success else "FAILED", len(results))
    return report


def _summarise(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    arguments = {key: value for key, value in config.kwargs.items() if key not in {"batch_id", "result_format"}}
    details = result.result or {}
    return {
        "expectation": config.type,
        "arguments": ", ".join(f"{key}={value}" for key, value in sorted(arguments.items())),
        "success": bool(result.success),
        "unexpected_count": int(details.get("unexpected_count") or (0 if result.success else 1)),
        "examples": [str(value) for value in (details.get("partial_unexpected_list") or [])[:3]],
    }
