"""A local OpenAI-compatible chat server that injects faults on request: 429 with Retry-After,
500, a response slower than the client's timeout, a dropped connection, a garbage body. Used to
test the `openai:` backend's retries, failures and budget against real HTTP."""

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support import free_port


class FaultyServer:
    """`faults`: behaviours consumed one per request (then "ok"): ok, 429, 500, slow, reset, garbage, not-chat."""

    def __init__(self, answer: Callable[[list[dict[str, str]]], str], faults: list[str] | None = None) -> None:
        self.answer = answer
        self.faults = list(faults or [])
        self.requests: list[tuple[float, str, dict[str, Any]]] = []
        """(time, behaviour, body) of every request received."""
        self.lock = threading.Lock()
        self.slow_seconds = 3.0
        self.in_flight = 0
        self.max_in_flight = 0

    def next_behaviour(self, body: dict[str, Any]) -> str:
        with self.lock:
            behaviour = self.faults.pop(0) if self.faults else "ok"
            self.requests.append((time.monotonic(), behaviour, body))
        return behaviour


def _handler(server: FaultyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            behaviour = server.next_behaviour(body)
            with server.lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                self._respond(behaviour, body)
            finally:
                with server.lock:
                    server.in_flight -= 1

        def _respond(self, behaviour: str, body: dict[str, Any]) -> None:
            if behaviour == "429":
                self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "1"})
            elif behaviour == "500":
                self._send(500, b'{"error": {"message": "boom"}}')
            elif behaviour == "reset":
                self.close_connection = True
                self.connection.shutdown(2)
            elif behaviour == "slow":
                time.sleep(server.slow_seconds)
                self._send(200, self._completion(body))
            elif behaviour == "garbage":
                self._send(200, b'{"choices": [ {"mess')
            elif behaviour == "not-chat":
                self._send(200, b'{"hello": "world"}')
            else:
                self._send(200, self._completion(body))

        def _completion(self, body: dict[str, Any]) -> bytes:
            text = server.answer(body["messages"])
            prompt_tokens = sum(len(m["content"]) // 4 for m in body["messages"])
            return json.dumps(
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": 7,
                        "total_tokens": prompt_tokens + 7,
                    },
                }
            ).encode()

    return Handler


@contextmanager
def serve(server: FaultyServer) -> Iterator[str]:
    """Run `server` on a free loopback port; yield its base URL (`http://127.0.0.1:PORT/v1`)."""
    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(server))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
