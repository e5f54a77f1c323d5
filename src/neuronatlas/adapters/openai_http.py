"""The direct transport of the `openai:` backend: JSON POSTs to an OpenAI-compatible server over
one aiohttp session, with the `openai` client's retry policy.

Why not the `openai` client itself: its HTTP stack (httpx2, httpcore2) costs 1.5 to 2 ms of CPU per
request, growing with the number of open connections, so one process on a small machine cannot
keep 64 or more requests in flight against a server answering in 200 ms; aiohttp costs about
0.3 ms. `bench/llm.py` measures both side by side. The Batch API (files, batches) still goes
through the `openai` client: a handful of calls per stage.

Retried, up to `max_retries` times: 408, 409, 429 and 5xx answers, timeouts and dropped
connections (also one cut mid-body), unless the server says `x-should-retry: false`. The wait is
the server's `retry-after-ms` / `Retry-After` (seconds or an HTTP date) when it asks for at most a
minute, else exponential backoff from 0.5 s up to 8 s with jitter. Not retried: other 4xx answers
and bodies that are not JSON. A failure is a `TransportError` whose reason names the error class
as the `openai` client would (`RateLimitError 429: ...`) and never holds the API key.
"""

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

INITIAL_RETRY_S = 0.5
MAX_RETRY_S = 8.0
MAX_RETRY_AFTER_S = 60.0
"""A server's Retry-After is honoured up to this; a longer one falls back to backoff."""
STATUS_NAMES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    409: "ConflictError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
}


class TransportError(Exception):
    """A request that failed for good; `reason` is what the failure row records."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Transport:
    """POST JSON bodies to `base_url` (an async context manager: one connection pool per event
    loop, of at most `connections` connections)."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        max_retries: int,
        timeout_s: float,
        connections: int,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **headers}
        self.max_retries, self.timeout_s, self.connections = max_retries, timeout_s, connections
        self._session: Any = None

    async def __aenter__(self) -> "Transport":
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connections),
            # as the openai client's timeout: to connect, and between bytes of the answer
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s, sock_read=self.timeout_s),
            headers=self.headers,
            trust_env=True,  # HTTP(S)_PROXY, NO_PROXY, as the openai client honours them
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._session.close()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """The JSON answer to `body` at `path`, after the retries; else a `TransportError`."""
        payload = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            reason, retry, wait = await self._try(path, payload)
            if reason is None:
                return wait  # the answer
            if not retry or attempt == self.max_retries:
                raise TransportError(reason)
            delay = wait if wait is not None else backoff(attempt)
            log.info("retrying %s in %.1f s (%s)", path, delay, reason)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _try(self, path: str, payload: bytes) -> tuple[str | None, bool, Any]:
        """(failure reason or None, whether to retry, the answer or the server's asked wait)."""
        import aiohttp

        try:
            async with self._session.post(self.base_url + path, data=payload) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except TimeoutError:
            return "APITimeoutError: Request timed out.", True, None
        except aiohttp.ClientError as error:
            return f"APIConnectionError: {type(error).__name__}: {str(error)[:120]}", True, None
        if status < 400:
            try:
                return None, False, json.loads(raw)
            except ValueError as error:
                return f"{type(error).__name__}: {str(error)[:120]}; body {raw[:60]!r}", False, None
        reason = f"{status_name(status)} {status}: {error_message(raw)}"
        return reason, should_retry(status, headers), retry_after(headers)


def status_name(status: int) -> str:
    if status in STATUS_NAMES:
        return STATUS_NAMES[status]
    return "InternalServerError" if status >= 500 else "APIStatusError"


def error_message(raw: bytes) -> str:
    """The server's `error.message`, else the start of its body."""
    try:
        found = json.loads(raw)
        message = found.get("error", {}).get("message") if isinstance(found.get("error"), dict) else found.get("error")
        text = str(message or found.get("message") or found.get("detail") or raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        text = raw.decode(errors="replace")
    return " ".join(text.split())[:160] or "(empty body)"


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    told = headers.get("x-should-retry", "").lower()
    if told in ("true", "false"):
        return told == "true"
    return status in (408, 409, 429) or status >= 500


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait the server asks for, in seconds, where it asks for one of at most a minute."""
    seconds: float | None = None
    if "retry-after-ms" in headers:
        try:
            seconds = float(headers["retry-after-ms"]) / 1000
        except ValueError:
            seconds = None
    if seconds is None and "retry-after" in headers:
        value = headers["retry-after"]
        try:
            seconds = float(value)
        except ValueError:
            when = email.utils.parsedate_tz(value)
            seconds = None if when is None else email.utils.mktime_tz(when) - time.time()
    return seconds if seconds is not None and 0 < seconds <= MAX_RETRY_AFTER_S else None


def backoff(attempt: int) -> float:
    """0.5 s doubling up to 8 s, less up to a quarter at random (as the openai client waits)."""
    return min(INITIAL_RETRY_S * 2.0**attempt, MAX_RETRY_S) * (1 - 0.25 * random.random())
