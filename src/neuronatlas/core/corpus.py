"""Cut tokenised documents into fixed windows ("excerpts") with stable ids.

A document is de-duplicated by the hash of its normalised text, tokenised without special
tokens, and cut into non-overlapping windows of exactly `window` tokens; a tail shorter than a
window is dropped (and counted), so every excerpt has the same length, as the method needs.
"""

import hashlib
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

Encode = Callable[[list[str]], list[list[int]]]
"""Batch tokenizer: texts in, token ids out (no special tokens added)."""


@dataclass(frozen=True)
class Document:
    """One unit of source text."""

    doc_id: str
    """Identifier within its source (title, `file:line`, row number...)."""
    text: str
    """The text, as read (already decoded to `str`)."""


@dataclass(frozen=True)
class Window:
    """One excerpt: `window` consecutive tokens of one document."""

    sequence_id: int
    """Stable id: a function of the document's content hash and the window index."""
    doc_id: str
    """The document it was cut from."""
    window: int
    """Index of this window within its document (0, 1, ...)."""
    token_ids: list[int]
    """Token ids, exactly `window` of them."""
    tokens: list[str]
    """Each token decoded on its own, for display."""


@dataclass
class CorpusStats:
    """Counts of what happened to the source's documents."""

    documents_read: int = 0
    documents_empty: int = 0
    documents_duplicate: int = 0
    documents_too_short: int = 0
    documents_used: int = 0
    tokens_read: int = 0
    tokens_dropped: int = 0
    """Tail tokens (and whole too-short documents) that did not fill a window."""
    windows: int = 0


def normalise_text(text: str) -> str:
    """NFC-normalised, with surrounding whitespace stripped: the form that is hashed."""
    return unicodedata.normalize("NFC", text).strip()


def content_hash(text: str) -> str:
    """sha256 hex digest of the normalised text; equal texts de-duplicate."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def sequence_id(doc_hash: str, window_index: int) -> int:
    """A positive int64 derived from (content hash, window index): stable across re-ingests."""
    digest = hashlib.sha256(f"{doc_hash}:{window_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def cut_windows(token_ids: Sequence[int], window: int) -> list[list[int]]:
    """Non-overlapping windows of exactly `window` tokens; a shorter tail is dropped."""
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}")
    usable = len(token_ids) - len(token_ids) % window
    return [list(token_ids[start : start + window]) for start in range(0, usable, window)]


def unique_documents(documents: Iterable[Document], stats: CorpusStats) -> list[tuple[Document, str]]:
    """Documents with non-empty text, first occurrence of each content hash, with that hash."""
    seen: set[str] = set()
    kept: list[tuple[Document, str]] = []
    for document in documents:
        stats.documents_read += 1
        if not normalise_text(document.text):
            stats.documents_empty += 1
            continue
        doc_hash = content_hash(document.text)
        if doc_hash in seen:
            stats.documents_duplicate += 1
            continue
        seen.add(doc_hash)
        kept.append((document, doc_hash))
    return kept


def build_windows(
    documents: Iterable[Document],
    encode: Encode,
    token_strings: Sequence[str],
    window: int,
    *,
    batch_size: int = 512,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[list[Window], CorpusStats]:
    """Tokenise unique documents in batches and cut them into windows.

    `token_strings[i]` is token id `i` decoded on its own. `on_batch(docs_done, tokens_done)`
    is called after each batch (for progress display).
    """
    stats = CorpusStats()
    kept = unique_documents(documents, stats)
    windows: list[Window] = []
    for start in range(0, len(kept), batch_size):
        batch = kept[start : start + batch_size]
        encoded = encode([normalise_text(document.text) for document, _ in batch])
        for (document, doc_hash), token_ids in zip(batch, encoded, strict=True):
            stats.tokens_read += len(token_ids)
            pieces = cut_windows(token_ids, window)
            stats.tokens_dropped += len(token_ids) - len(pieces) * window
            if not pieces:
                stats.documents_too_short += 1
                continue
            stats.documents_used += 1
            for index, ids in enumerate(pieces):
                windows.append(
                    Window(
                        sequence_id=sequence_id(doc_hash, index),
                        doc_id=document.doc_id,
                        window=index,
                        token_ids=ids,
                        tokens=[token_strings[i] for i in ids],
                    )
                )
        if on_batch is not None:
            on_batch(min(start + batch_size, len(kept)), stats.tokens_read)
    stats.windows = len(windows)
    return windows, stats
