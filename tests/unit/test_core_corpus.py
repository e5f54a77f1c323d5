"""Windowing, de-duplication and stable ids (pure core)."""

import pytest

from neuronatlas.core.corpus import (
    Document,
    build_windows,
    content_hash,
    cut_windows,
    normalise_text,
    sequence_id,
)


def char_encode(texts: list[str]) -> list[list[int]]:
    """A fake tokenizer: one token per character, id = code point % 100."""
    return [[ord(c) % 100 for c in text] for text in texts]


TOKEN_STRINGS = [f"<{i}>" for i in range(100)]


def test_cut_windows_drops_the_short_tail() -> None:
    assert cut_windows(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert cut_windows(list(range(8)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert cut_windows([1, 2, 3], 4) == []


def test_cut_windows_rejects_window_below_two() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        cut_windows([1, 2, 3], 1)


def test_normalisation_makes_equivalent_texts_hash_equal() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert normalise_text(f"  {decomposed}\n") == composed
    assert content_hash(composed) == content_hash(f" {decomposed} ")
    assert content_hash("a") != content_hash("b")


def test_sequence_id_is_stable_positive_and_distinct() -> None:
    doc_hash = content_hash("some text")
    assert sequence_id(doc_hash, 0) == sequence_id(doc_hash, 0)
    ids = {sequence_id(doc_hash, index) for index in range(1000)}
    assert len(ids) == 1000
    assert all(0 < value < 2**63 for value in ids)


def test_build_windows_deduplicates_and_counts() -> None:
    documents = [
        Document("a", "abcdefghij"),  # 10 tokens -> 2 windows of 4, 2 dropped
        Document("b", "abcdefghij"),  # duplicate of a
        Document("c", " abcdefghij "),  # duplicate after normalisation
        Document("d", "xyz"),  # too short
        Document("e", "   "),  # empty
        Document("f", "klmnopqr"),  # 8 tokens -> 2 windows
    ]
    windows, stats = build_windows(documents, char_encode, TOKEN_STRINGS, 4, batch_size=2)
    assert [(w.doc_id, w.window) for w in windows] == [("a", 0), ("a", 1), ("f", 0), ("f", 1)]
    assert windows[0].token_ids == [97 % 100, 98 % 100, 99 % 100, 100 % 100]
    assert windows[0].tokens == ["<97>", "<98>", "<99>", "<0>"]
    assert (stats.documents_read, stats.documents_empty, stats.documents_duplicate) == (6, 1, 2)
    assert (stats.documents_too_short, stats.documents_used, stats.windows) == (1, 2, 4)
    assert stats.tokens_read == 10 + 3 + 8
    assert stats.tokens_dropped == 2 + 3
    assert len({w.sequence_id for w in windows}) == 4


def test_sequence_ids_do_not_depend_on_document_order_or_neighbours() -> None:
    first, _ = build_windows([Document("a", "abcdefgh"), Document("b", "ijklmnop")], char_encode, TOKEN_STRINGS, 4)
    second, _ = build_windows([Document("x", "zzzzzzzz"), Document("b", "ijklmnop")], char_encode, TOKEN_STRINGS, 4)
    ids_of_b_first = [w.sequence_id for w in first if w.doc_id == "b"]
    ids_of_b_second = [w.sequence_id for w in second if w.doc_id == "b"]
    assert ids_of_b_first == ids_of_b_second


def test_progress_callback_sees_every_batch() -> None:
    seen: list[tuple[int, int]] = []
    documents = [Document(str(i), "abcd" * (i + 1)) for i in range(5)]
    build_windows(documents, char_encode, TOKEN_STRINGS, 4, batch_size=2, on_batch=lambda d, t: seen.append((d, t)))
    assert [done for done, _ in seen] == [2, 4, 5]
    assert seen[-1][1] == sum(4 * (i + 1) for i in range(5))
