"""Semantic search data for the viewer: explanation embeddings from the shipped all-MiniLM-L6-v2,
computed at view time, and a vocabulary of word embeddings so that a query can be embedded in
the browser with no server and no model: the query's vector is the mean of its known words'
vectors. Served (`view --serve`), the page asks the server instead, which embeds the whole query
with the same model (exact).

Vectors are unit length and stored as int8 (x 127): a dot product then ranks within about 1% of
the float one, at a quarter of the size."""

from __future__ import annotations

import base64
import logging
import re

import numpy as np

from neuronatlas.adapters.embedding import SHA256, Encoder, encoder_folder
from neuronatlas.adapters.models import cache_root

log = logging.getLogger(__name__)

WORD = re.compile(r"[a-z]{3,}")
"""Vocabulary entries: the encoder's whole-word pieces of three letters or more (about 21,000)."""
SCALE = 127


def quantise(vectors: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(vectors * SCALE), -SCALE, SCALE).astype(np.int8)


def encode_base64(vectors: np.ndarray) -> str:
    return base64.b64encode(quantise(vectors).tobytes()).decode("ascii")


def vocabulary() -> list[str]:
    pieces = (encoder_folder() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return sorted({piece for piece in pieces if WORD.fullmatch(piece)})


def word_vectors(encoder: Encoder) -> tuple[list[str], np.ndarray]:
    """(words, int8 vectors), embedded once per machine and kept in the cache folder."""
    words = vocabulary()
    path = cache_root() / "viewer" / f"words-{SHA256[:12]}-{len(words)}.npy"
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape == (len(words), 384):
            return words, vectors
    log.info("embedding the viewer's %d-word vocabulary (once per machine)", len(words))
    vectors = quantise(encoder.encode(words))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npy")
    np.save(temporary, vectors)
    temporary.replace(path)
    return words, vectors


def new_words(texts: list[str], known: list[str]) -> list[str]:
    """Words of `texts` (three letters or more) that are not in `known`, sorted."""
    seen = set(known)
    return sorted({word for text in texts for word in WORD.findall(text.lower())} - seen)
