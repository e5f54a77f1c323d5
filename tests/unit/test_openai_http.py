"""The direct transport's retry policy: what is retried, how long it waits, how failures read."""

import email.utils
import time

import pytest

from neuronatlas.adapters.openai_http import backoff, error_message, retry_after, should_retry, status_name


@pytest.mark.parametrize(
    ("status", "headers", "retried"),
    [
        (429, {}, True),
        (500, {}, True),
        (503, {}, True),
        (408, {}, True),
        (409, {}, True),
        (400, {}, False),
        (401, {}, False),
        (404, {}, False),
        (503, {"x-should-retry": "false"}, False),
        (400, {"x-should-retry": "true"}, True),
    ],
)
def test_what_is_retried(status: int, headers: dict[str, str], retried: bool) -> None:
    assert should_retry(status, headers) is retried


def test_retry_after_in_seconds_milliseconds_and_as_a_date() -> None:
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    found = retry_after({"retry-after": soon})
    assert found is not None and 25 < found <= 30


@pytest.mark.parametrize("value", ["0", "-3", "3600", "soon", ""])
def test_a_retry_after_that_is_unusable_or_too_long_falls_back_to_backoff(value: str) -> None:
    assert retry_after({"retry-after": value}) is None


def test_backoff_doubles_to_a_ceiling_with_jitter() -> None:
    waits = [[backoff(attempt) for _ in range(200)] for attempt in range(6)]
    assert all(0.375 <= w <= 0.5 for w in waits[0])
    assert all(0.75 <= w <= 1.0 for w in waits[1])
    assert all(6.0 <= w <= 8.0 for w in waits[5])  # 16 s capped at 8
    assert len(set(waits[0])) > 100  # jittered, so that retries do not arrive together


def test_failures_read_as_the_openai_client_names_them() -> None:
    assert status_name(429) == "RateLimitError"
    assert status_name(502) == "InternalServerError"
    assert status_name(418) == "APIStatusError"
    assert error_message(b'{"error": {"message": "slow\\n down"}}') == "slow down"
    assert error_message(b'{"error": "quota"}') == "quota"
    assert error_message(b'{"detail": "Not Found"}') == "Not Found"
    assert error_message(b"<html>bad gateway</html>") == "<html>bad gateway</html>"
    assert error_message(b"") == "(empty body)"
