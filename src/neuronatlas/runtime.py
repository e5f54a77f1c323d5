"""Process set-up for commands and tests: offline Prefect, quiet libraries, one-line errors.

Called by the CLI's entry point and by test fixtures, never at import time.
"""

import logging
import os

from neuronatlas.errors import AtlasError

OFFLINE_ENVIRONMENT = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "GX_ANALYTICS_ENABLED": "false",
}


def _subclasses(cls: type) -> list[type]:
    direct: list[type] = cls.__subclasses__()
    return [sub for child in direct for sub in (child, *_subclasses(child))]


def configure_environment() -> None:
    """Offline defaults for Prefect, Hugging Face and GE; values already set are kept."""
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


class HideAtlasErrors(logging.Filter):
    """Keep Prefect's console quiet about an `AtlasError`: the CLI prints it as one line.

    Drops the records that carry one (with their traceback) and the "Finished in state
    Failed(...)" lines that repeat its message; the API log handler still records them.
    """

    names = tuple(f"{cls.__name__}:" for cls in (AtlasError, *_subclasses(AtlasError)))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], AtlasError):
            return False
        message = record.getMessage()
        return not (message.startswith("Finished in state Failed(") and any(n in message for n in self.names))


def quiet_user_errors() -> None:
    """Attach the filter to Prefect's console handlers (after Prefect configured logging)."""
    user_error_filter = HideAtlasErrors()
    for name in ["prefect", "prefect.flow_runs", "prefect.task_runs", ""]:
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ != "APILogHandler":
                handler.addFilter(user_error_filter)
