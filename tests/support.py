"""Helpers shared by test modules (fixtures live in conftest.py)."""

import json
import os
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def small_jsonl_corpus(path: Path, documents: int = 300) -> Path:
    """The first `documents` Wikipedia summaries of the shipped source, as a JSONL file."""
    from neuronatlas.adapters.sources import SourceSpec, read_source

    loaded = read_source(SourceSpec("wiki-vital-en"))
    with path.open("w") as handle:
        for document in loaded.documents[:documents]:
            handle.write(json.dumps({"title": document.doc_id, "text": document.text}) + "\n")
    return path


_EXCERPT_LINE = re.compile(r"^Excerpt \d+ tokens: (.*)$", re.MULTILINE)


def is_json_simulation(request: str) -> bool:
    """Whether a last user message is a JSON simulation request."""
    return request.startswith("Explanation:") and "\nExcerpt 1 tokens: " in request


def json_request_excerpts(request: str) -> list[list[str]]:
    """The tokens of each excerpt of a JSON simulation request, in order."""
    return [json.loads(tokens) for tokens in _EXCERPT_LINE.findall(request)]


def json_simulation_answer(request: str, fires: Callable[[str], bool]) -> str:
    """The answer to a JSON simulation request: per excerpt, activation 9 on the tokens `fires`
    picks, else 0."""
    return json.dumps(
        {
            str(number): [{"token": t, "activation": 9 if fires(t) else 0} for t in tokens]
            for number, tokens in enumerate(json_request_excerpts(request), start=1)
        }
    )


class ScriptedBackend:
    """A fake LLM for plumbing tests (a real one runs in the integration tier). It explains a
    neuron as its strongest train token and simulates by marking exactly that token, so its
    scores are high on the right neuron and near zero on another's records; sample 1 answers
    with the activation format (a parse failure), every other sample with the weakest token."""

    can_read_digits = True
    can_read_choices = True
    abilities = "scripted: reads every readout"

    def __init__(self, name: str = "scripted:v1", crash_after: int | None = None) -> None:
        from neuronatlas.core.llm import Usage

        self.id = name
        self.usage = Usage()
        self.generated: list[str] = []
        """The last user message of every prompt answered by `generate`."""
        self.read: list[tuple[str, int]] = []
        """(explanation heading, excerpts) of every `read_digits` call."""
        self.crash_after = crash_after

    def _count(self) -> None:
        self.usage.calls += 1
        if self.crash_after is not None and self.usage.calls > self.crash_after:
            raise RuntimeError("scripted crash")

    def generate(self, prompts: list, params: object) -> list:
        from neuronatlas.core.llm import Generation

        answers = []
        for prompt in prompts:
            self._count()
            last = prompt.messages[-1][1]
            self.generated.append(last)
            if is_json_simulation(last):
                answers.append(Generation((self._json_answer(last),)))
                continue
            if "Strongest tokens" in last:  # the tokens format: "token"<tab>mean<tab>(seen Nx)
                listed = [line.split("\t") for line in last.splitlines() if line.count("\t") == 2]
                ranked = sorted(((float(mean), token.strip('"').strip()) for token, mean, _ in listed), reverse=True)
            else:
                pairs = [line.rsplit("\t", 1) for line in last.splitlines() if "\t" in line]
                ranked = sorted(((float(value), token.strip()) for token, value in pairs), reverse=True)
            best, worst = ranked[0][1], ranked[-1][1]
            texts = [f' the token "{best}".', "<start>\nthe\t0", f' the token "{worst}".']
            answers.append(Generation(tuple(texts[i % 3] for i in range(params.n)), None, 100, 10))  # type: ignore[attr-defined]
        return answers

    @staticmethod
    def _target(text: str) -> str:
        """The token an explanation names (`the token "X"`), else its last word."""
        if 'the token "' in text:
            return text.split('the token "', 1)[1].split('"', 1)[0]
        return text.rstrip(" .").rsplit(" ", 1)[-1]

    def _json_answer(self, request: str) -> str:
        target = self._target(request.split("\n", 1)[0])
        return json_simulation_answer(request, lambda token: token.strip() == target)

    def read_choices(self, prompt: object, texts: list) -> object:
        """Yes (0.9) when the excerpt holds the explanation's token (detection) or marks it
        (fuzzing: the system message speaks of marked tokens), else No (0.9)."""
        from neuronatlas.core.llm import ChoiceReadout

        self._count()
        messages = prompt.prefix.messages  # type: ignore[attr-defined]
        target = self._target(messages[-1][1].split("\nExcerpt:", 1)[0])
        fuzzing = "marked" in messages[0][1]
        hits = [f"<<{target}>>" in text if fuzzing else target in text for text in texts]
        return ChoiceReadout(tuple((0.9, 0.1) if hit else (0.1, 0.9) for hit in hits))

    def read_digits(self, prompt: object, excerpts: list) -> object:
        from neuronatlas.core.llm import DigitReadout

        self._count()
        heading = prompt.prefix.messages[-1][1]  # type: ignore[attr-defined]
        self.read.append((heading, len(excerpts)))
        target = self._target(heading)
        expected = tuple(tuple(9.0 if t.strip() == target else 0.0 for t in tokens) for tokens in excerpts)
        return DigitReadout(expected, tuple(tuple(1.0 for _ in tokens) for tokens in excerpts))


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` unwritable for this process and its children while the block runs: its
    permissions for a user; a read-only bind mount for root, whom permissions do not stop."""
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")] if path.is_dir()}
        for path, mode in modes.items():
            path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], check=False, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root without the right to mount a read-only view: {mounted.stderr.decode()[:80]}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)
