"""Contract of the corpus dataset: `corpus/<corpus_id>/part-*.parquet`.

One row per window. A corpus is committed when `_manifest.json` exists in its folder.
"""

import hashlib
import json
import re
import time
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from neuronatlas.core.corpus import CorpusStats, Window

FORMAT_VERSION = 1
"""Bumped when windowing or the schema changes, so old corpus ids are not reused."""

SCHEMA = pa.schema(
    [
        pa.field("sequence_id", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("window", pa.int32(), nullable=False),
        pa.field("token_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("tokens", pa.list_(pa.string()), nullable=False),
    ]
)

ROWS_PER_PART = 16_384


def corpus_path(corpus_id: str) -> str:
    """Folder of one corpus, relative to the storage root."""
    return f"corpus/{corpus_id}"


def corpus_id(source_label: str, fingerprint: str, tokenizer_slug: str, tokenizer_id: str, window: int) -> str:
    """Readable and content-addressed: the same source, tokenizer and window give the same id."""
    key = json.dumps([FORMAT_VERSION, fingerprint, tokenizer_id, window])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{slug(source_label)}-{slug(tokenizer_slug, 24)}-w{window}-{digest}"


def slug(text: str, max_length: int = 40) -> str:
    """Lower-case letters, digits and dashes: safe in any storage path."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return cleaned[:max_length].rstrip("-") or "corpus"


def to_table(windows: list[Window], source_label: str) -> pa.Table:
    """Rows in the contract's schema and order."""
    return pa.table(
        {
            "sequence_id": [w.sequence_id for w in windows],
            "source": [source_label] * len(windows),
            "doc_id": [w.doc_id for w in windows],
            "window": [w.window for w in windows],
            "token_ids": [w.token_ids for w in windows],
            "tokens": [w.tokens for w in windows],
        },
        schema=SCHEMA,
    )


def parts(table: pa.Table, rows_per_part: int | None = None) -> list[tuple[str, pa.Table]]:
    """The table cut into `part-NNNNN.parquet` files of at most `rows_per_part` rows."""
    rows_per_part = rows_per_part or ROWS_PER_PART
    return [
        (f"part-{index:05d}.parquet", table.slice(offset, rows_per_part))
        for index, offset in enumerate(range(0, max(table.num_rows, 1), rows_per_part))
    ]


def tokens_by_sequence(corpus: pa.Table, sequence_ids: pa.Array | pa.ChunkedArray) -> dict[int, tuple[str, ...]]:
    """The decoded tokens of the windows `sequence_ids` names, from a corpus table."""
    wanted = corpus.select(["sequence_id", "tokens"]).filter(pc.is_in(corpus["sequence_id"], pc.unique(sequence_ids)))
    return {
        sequence_id: tuple(tokens)
        for sequence_id, tokens in zip(wanted["sequence_id"].to_pylist(), wanted["tokens"].to_pylist(), strict=True)
    }


def corpus_manifest(
    corpus_id: str,
    loaded: Any,
    tokenizer: Any,
    window: int,
    table: pa.Table,
    stats: CorpusStats,
    report: Any,
    timings: dict[str, float],
    context: dict[str, Any],
) -> dict[str, Any]:
    """What the corpus is, where it came from (`loaded`: the source as read), how it was made
    (`tokenizer`, `stats`, `timings`) and whether it passed its suite (`report`)."""
    return {
        "dataset": "corpus",
        "corpus_id": corpus_id,
        "format_version": FORMAT_VERSION,
        "source": {"label": loaded.label, "kind": loaded.kind, "fingerprint": loaded.fingerprint, **loaded.details},
        "tokenizer": {
            "model": tokenizer.source.spec,
            "hf_id": tokenizer.source.hf_id,
            "identity": tokenizer.identity,
            "vocab_size": tokenizer.vocab_size,
            "fingerprint": tokenizer.fingerprint,
        },
        "window": window,
        "rows": table.num_rows,
        "tokens": table.num_rows * window,
        "counts": asdict(stats),
        "files": [name for name, _ in parts(table)],
        "schema": table.schema.to_string(),
        "validation": report.to_manifest(),
        "timings_s": {name: round(seconds, 3) for name, seconds in timings.items()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **context,
    }
