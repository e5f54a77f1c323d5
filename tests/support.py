"""Helpers shared by test modules (fixtures live in conftest.py)."""

import json
import socket
from pathlib import Path

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
