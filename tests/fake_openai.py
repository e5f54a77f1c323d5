"""A local OpenAI-compatible chat server that injects faults on request: 429 with Retry-After,
500, a response slower than the client's timeout, a dropped connection, a garbage body. It also
serves the Batch API (file upload, batch create / retrieve, output file) with batches that stay
in progress for a set number of polls. Used to test the `openai:` backend against real HTTP."""

import email.parser
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support import free_port

BLOCK = 16
"""Tokens per prefix-cache block (vLLM's default)."""


class FaultyServer:
    """`faults`: behaviours consumed one per request (then "ok"): ok, 429, 500, 400, slow, reset, cut (the
    connection drops mid-body), garbage, not-chat."""

    def __init__(self, answer: Callable[[list[dict[str, str]]], str], faults: list[str] | None = None) -> None:
        self.answer = answer
        self.faults = list(faults or [])
        self.requests: list[tuple[float, str, dict[str, Any]]] = []
        """(time, behaviour, body) of every request received."""
        self.lock = threading.Lock()
        self.slow_seconds = 3.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.fault_rates: dict[str, float] = {}
        """Once `faults` is used up: each behaviour's chance on every chat request (seeded)."""
        self.random = random.Random(0)
        self.latency = 0.0
        """Seconds every ordinary chat answer waits before it is sent (a generation's time)."""
        self.spans: list[tuple[float, float, str]] = []
        """(start, end, last message) of every ordinary chat request answered."""
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.polls_before_done = 0
        """Retrievals a new batch answers `in_progress` before it completes."""
        self.tokens_served = 0
        """Prompt and completion tokens of every answer sent, as its `usage` said."""
        self.prompt_logprobs: str | None = None
        """Completions with `echo` and `logprobs`: None (not served: 404), "aligned" (each prompt
        token's alternatives are those of its own position) or "shifted" (those of the next
        position, as llama.cpp's server gives them)."""
        self.choice_logprobs: Callable[[list[dict[str, str]]], dict[str, float]] | None = None
        """When set, a request asking for `logprobs` gets the first answer token's alternatives:
        this function's {token: probability}. Unset: logprobs are ignored, as by a server without them."""
        self.tokenize: Callable[[str | list[dict[str, str]]], list[int]] | None = None
        """When set (chat messages, or a completions prompt or answer text -> token ids), usage counts
        tokens with it and reports a prefix cache as vLLM's: `prompt_tokens_details.cached_tokens` are the
        leading 16-token blocks some earlier prompt began with."""
        self.cache_blocks: set[int] = set()
        self.cached_served = 0
        """Prompt tokens every answer sent reported as cached."""

    def prompt_usage(self, prompt: str | list[dict[str, str]], fallback: int) -> tuple[int, int]:
        """(prompt tokens, of which cached) of one prompt; `fallback` tokens without `tokenize`."""
        if self.tokenize is None:
            return fallback, 0
        ids = self.tokenize(prompt)
        cached, chain, hit = 0, 0, True
        with self.lock:
            for end in range(BLOCK, len(ids) + 1, BLOCK):
                chain = hash((chain, tuple(ids[end - BLOCK : end])))
                hit = hit and chain in self.cache_blocks
                cached += BLOCK if hit else 0
                self.cache_blocks.add(chain)
            self.cached_served += cached
        return len(ids), cached

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        text = self.answer(body["messages"])
        prompt_tokens, cached = self.prompt_usage(
            body["messages"], sum(len(m["content"]) // 4 for m in body["messages"])
        )
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": text},
        }
        if body.get("logprobs") and self.choice_logprobs is not None:
            alternatives = sorted(self.choice_logprobs(body["messages"]).items(), key=lambda item: -item[1])
            top = [
                {"token": token, "logprob": math.log(p), "bytes": list(token.encode())}
                for token, p in alternatives[: body.get("top_logprobs", 0)]
            ]
            choice["message"]["content"] = alternatives[0][0]
            choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top}]}
        answered = choice["message"]["content"]
        completion_tokens = 7 if self.tokenize is None else len(self.tokenize(answered))
        with self.lock:
            self.tokens_served += prompt_tokens + completion_tokens
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }

    def text_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """Echoed prompts with made-up but well-formed log-probabilities: a prompt token's own
        text is its most likely alternative; where a digit is read ("<token>\t" then the
        placeholder), 9 is likely after a token with a digit in it, else 0."""
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = []
        for index, prompt in enumerate(prompts):
            pieces = re.findall(r"\d|[A-Za-z]+|\s+|[^\sA-Za-z\d]", prompt)
            offsets = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
            top = []
            for i, piece in enumerate(pieces):
                before = prompt[: offsets[i]]
                line = before.rsplit("\n", 1)[-1]
                if before.endswith("\t") and line.count("\t") == 1:  # an activation is read here
                    digit = "9" if any(c.isdigit() for c in line) else "0"
                    alternatives = {digit: 0.8, "5": 0.1, piece: 0.05}
                else:
                    alternatives = {piece: 0.9, "#": 0.05}
                top.append({token: math.log(p) for token, p in alternatives.items()})
            if self.prompt_logprobs == "shifted":
                top = [*top[1:], {"#": math.log(0.5)}]
            top[0] = None  # type: ignore[call-overload]  # nothing predicts the first token
            logprobs = {
                "tokens": pieces,
                "token_logprobs": [None] + [t.get(p, -9.0) for t, p in zip(top[1:], pieces[1:], strict=True)],
                "top_logprobs": top,
                "text_offset": offsets,
            }
            choices.append({"index": index, "text": prompt + "\n", "logprobs": logprobs, "finish_reason": "length"})
        counted = [self.prompt_usage(p, len(c["logprobs"]["tokens"])) for p, c in zip(prompts, choices, strict=True)]
        tokens, cached, answers = sum(n for n, _ in counted), sum(c for _, c in counted), len(choices)
        with self.lock:
            self.tokens_served += tokens + answers
        return {
            "id": "cmpl-test",
            "object": "text_completion",
            "created": 0,
            "model": body["model"],
            "choices": choices,
            "usage": {
                "prompt_tokens": tokens,
                "completion_tokens": len(choices),
                "total_tokens": tokens + len(choices),
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }

    def upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        data = next(
            part.get_payload(decode=True)
            for part in message.walk()
            if part.get_param("name", header="content-disposition") == "file"
        )
        file_id = f"file-{len(self.files)}"
        self.files[file_id] = data
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": 0,
            "filename": "x.jsonl",
            "purpose": "batch",
            "status": "processed",
        }

    def create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"batch-{len(self.batches)}"
        self.batches[batch_id] = {"input_file_id": body["input_file_id"], "polls": 0, "output_file_id": None}
        return self.batch_object(batch_id, "validating")

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        batch["polls"] += 1
        if batch["polls"] <= self.polls_before_done:
            return self.batch_object(batch_id, "in_progress")
        if batch["output_file_id"] is None:
            lines = []
            for raw in self.files[batch["input_file_id"]].decode().splitlines():
                request = json.loads(raw)
                response = {"status_code": 200, "request_id": "r", "body": self.completion(request["body"])}
                lines.append(
                    json.dumps({"id": "x", "custom_id": request["custom_id"], "response": response, "error": None})
                )
            batch["output_file_id"] = f"file-{len(self.files)}"
            self.files[batch["output_file_id"]] = ("\n".join(lines) + "\n").encode()
        return self.batch_object(batch_id, "completed")

    def batch_object(self, batch_id: str, status: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        return {
            "id": batch_id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "input_file_id": batch["input_file_id"],
            "output_file_id": batch["output_file_id"],
            "error_file_id": None,
            "status": status,
            "created_at": 0,
        }

    def _draw(self) -> str:
        roll = self.random.random()
        for behaviour, rate in self.fault_rates.items():
            if roll < rate:
                return behaviour
            roll -= rate
        return "ok"

    def next_behaviour(self, body: dict[str, Any]) -> str:
        with self.lock:
            behaviour = self.faults.pop(0) if self.faults else self._draw()
            self.requests.append((time.monotonic(), behaviour, body))
        return behaviour


def _handler(server: FaultyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, as real servers send them

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

        def do_GET(self) -> None:
            with server.lock:
                server.requests.append((time.monotonic(), "GET " + self.path, {}))
            if self.path.startswith("/v1/batches/"):
                self._send(200, json.dumps(server.retrieve_batch(self.path.rsplit("/", 1)[1])).encode())
            elif self.path.startswith("/v1/files/") and self.path.endswith("/content"):
                self._send(200, server.files[self.path.split("/")[3]])
            else:
                self._send(404, b'{"error": {"message": "not found"}}')

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.endswith("/files"):
                with server.lock:
                    server.requests.append((time.monotonic(), "upload", {}))
                self._send(200, json.dumps(server.upload(self.headers["Content-Type"], raw)).encode())
                return
            if self.path.endswith("/batches"):
                with server.lock:
                    server.requests.append((time.monotonic(), "create batch", {}))
                self._send(200, json.dumps(server.create_batch(json.loads(raw))).encode())
                return
            body = json.loads(raw)
            if self.path.endswith("/completions") and not self.path.endswith("/chat/completions"):
                with server.lock:
                    server.requests.append((time.monotonic(), "completions", body))
                if server.prompt_logprobs is None:
                    self._send(404, b'{"error": {"message": "not found"}}')
                else:
                    self._send(200, json.dumps(server.text_completion(body)).encode())
                return
            behaviour = server.next_behaviour(body)
            with server.lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            started = time.monotonic()
            try:
                time.sleep(server.latency)
                self._respond(behaviour, body)
            finally:
                with server.lock:
                    server.in_flight -= 1
                    server.spans.append((started, time.monotonic(), str(body["messages"][-1]["content"])))

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
            elif behaviour == "cut":  # the connection drops mid-body
                whole = self._completion(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(whole)))
                self.end_headers()
                self.wfile.write(whole[: len(whole) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
            elif behaviour == "400":
                self._send(400, b'{"error": {"message": "max_tokens is too large"}}')
            elif behaviour == "garbage":
                self._send(200, b'{"choices": [ {"mess')
            elif behaviour == "not-chat":
                self._send(200, b'{"hello": "world"}')
            else:
                self._send(200, self._completion(body))

        def _completion(self, body: dict[str, Any]) -> bytes:
            return json.dumps(server.completion(body)).encode()

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
