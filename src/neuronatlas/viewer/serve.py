"""`neuronatlas view --serve`: the built site on 127.0.0.1, plus one endpoint the static site cannot
have, `api/embed?q=...`, which embeds a semantic query with the same all-MiniLM-L6-v2 that embedded
the explanations (the static site approximates it from word vectors)."""

from __future__ import annotations

import functools
import json
import logging
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from neuronatlas.errors import InputError

log = logging.getLogger(__name__)
MAX_QUERY = 500


class _Encoder:
    """all-MiniLM-L6-v2, loaded on the first query; one query at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._encoder: Any = None

    def vector(self, query: str) -> list[float]:
        from neuronatlas.adapters.embedding import Encoder

        with self._lock:
            if self._encoder is None:
                self._encoder = Encoder(device="cpu")
            return [round(float(v), 6) for v in self._encoder.encode([query])[0]]


class _Handler(SimpleHTTPRequestHandler):
    encoder: _Encoder

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path.rstrip("/").endswith("/api/embed") or parts.path == "/api/embed":
            query = parse_qs(parts.query).get("q", [""])[0].strip()
            if not query or len(query) > MAX_QUERY:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"q: give a query of 1 to {MAX_QUERY} characters"})
                return
            self._json(HTTPStatus.OK, {"query": query, "vector": self.encoder.vector(query)})
            return
        super().do_GET()

    def _json(self, status: HTTPStatus, value: dict[str, Any]) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def check_port(port: int) -> None:
    """A port the server can be asked for (0: any free port)."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: must be 1-65535 (or 0: any free port)")


def server(site: str | Path, port: int = 8000) -> ThreadingHTTPServer:
    """A server for `site` on 127.0.0.1:`port` (0: any free port); call `serve_forever()`."""
    check_port(port)
    handler = functools.partial(type("Handler", (_Handler,), {"encoder": _Encoder()}), directory=str(site))
    return ThreadingHTTPServer(("127.0.0.1", port), handler)
