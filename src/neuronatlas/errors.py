"""Errors a user can act on.

The CLI prints an `AtlasError` as one line (no traceback) and exits non-zero; anything else is
a bug and keeps its traceback.
"""


class AtlasError(Exception):
    """A failure caused by input or environment, with a message that names both."""


class InputError(AtlasError):
    """A source, option or model the user named is missing, unreadable or malformed."""


class StorageError(AtlasError):
    """The storage root cannot be reached, does not exist, or refused a read or write."""


class ValidationFailedError(AtlasError):
    """A dataset failed its Great Expectations suite; nothing was committed."""

    def __init__(self, dataset: str, failed: list[str]) -> None:
        self.dataset = dataset
        self.failed = failed
        super().__init__(f"{dataset}: validation failed, nothing committed; failed expectations: " + "; ".join(failed))


def require_extra(module: str, extra: str, what: str) -> None:
    """Raise an `InputError` when an optional part's library is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(f"{what}: needs the {extra} extra (pip install 'neuronatlas[{extra}]')")
