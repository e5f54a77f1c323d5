"""Corpus sources: every format reads, every bad input is one clear InputError naming it."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neuronatlas.adapters.sources import SourceSpec, check_source, read_source
from neuronatlas.errors import InputError


def read(source: Path | str, **options: str) -> list[tuple[str, str]]:
    loaded = read_source(SourceSpec(str(source), **options))  # type: ignore[arg-type]
    return [(d.doc_id, d.text) for d in loaded.documents]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_builtin_wikipedia_source_reads_from_the_installed_package() -> None:
    loaded = read_source(SourceSpec("wiki-vital-en"))
    assert loaded.kind == "builtin"
    assert len(loaded.documents) > 9000
    titles = {d.doc_id for d in loaded.documents}
    assert "2001: A Space Odyssey" in titles
    assert loaded.details["licence"]["text"].startswith("CC BY-SA")
    assert "GPL" in loaded.details["licence"]["package_code"]
    assert len(loaded.fingerprint) == 64


def test_txt_file_is_one_document(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Hello there.\nSecond line.")
    assert read(tmp_path / "a.txt") == [("a.txt", "Hello there.\nSecond line.")]


def test_jsonl_with_custom_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": "one", "key": 1}, {"body": "two", "key": 2}])
    assert read(path, text_field="body") == [("d.jsonl:1", "one"), ("d.jsonl:2", "two")]
    assert read(path, text_field="body", id_field="key") == [("1", "one"), ("2", "two")]


def test_parquet_file(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["x y", None], "id": ["p", "q"]}), tmp_path / "t.parquet")
    assert read(tmp_path / "t.parquet", id_field="id") == [("p", "x y"), ("q", "")]


def test_folder_mixes_formats_sorted_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "sub" / "a.txt").write_text("ay")
    write_jsonl(tmp_path / "c.jsonl", [{"text": "sea"}])
    (tmp_path / ".hidden.csv").write_text("ignored")
    assert read(tmp_path) == [("b.txt", "bee"), ("c.jsonl:1", "sea"), ("sub/a.txt", "ay")]


def test_saved_hugging_face_dataset(tmp_path: Path) -> None:
    import datasets

    data = datasets.Dataset.from_dict({"text": ["first doc", "second doc"], "name": ["f", "s"]})
    data.save_to_disk(str(tmp_path / "single"))
    assert read(tmp_path / "single", id_field="name") == [("f", "first doc"), ("s", "second doc")]
    datasets.DatasetDict({"train": data, "test": data.select([1])}).save_to_disk(str(tmp_path / "dict"))
    assert read(tmp_path / "dict") == [("train:0", "first doc"), ("train:1", "second doc")]
    assert read(tmp_path / "dict", split="test") == [("test:0", "second doc")]
    with pytest.raises(InputError, match=r"no split 'valid' \(splits: train, test\)"):
        read(tmp_path / "dict", split="valid")


def test_fingerprint_changes_with_content_and_options(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "one", "body": "b"}])
    first = read_source(SourceSpec(str(path))).fingerprint
    assert read_source(SourceSpec(str(path))).fingerprint == first
    assert read_source(SourceSpec(str(path), text_field="body")).fingerprint != first
    write_jsonl(path, [{"text": "two", "body": "b"}])
    assert read_source(SourceSpec(str(path))).fingerprint != first


def test_replace_mode_substitutes_undecodable_bytes(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 ok")
    loaded = read_source(SourceSpec(str(tmp_path / "bad.txt"), encoding_errors="replace"))
    assert loaded.documents[0].text == "caf\ufffd ok"
    assert loaded.details["replacement_characters"] == 1


BAD_INPUTS = {
    "missing path": (lambda p: p / "nope.jsonl", {}, r"nope.jsonl: no such file or folder"),
    "unknown source": (lambda p: "wikipedia-all", {}, r"--source wikipedia-all: unknown source; built-in sources"),
    "empty file": (lambda p: _write(p / "e.txt", b""), {}, r"e.txt: file is empty"),
    "no usable text": (lambda p: _write(p / "w.txt", b"  \n\t "), {}, r"no usable text \(1 records, all empty\)"),
    "undecodable bytes": (lambda p: _write(p / "u.txt", b"ok \xff\xfe no"), {}, r"u.txt: not valid UTF-8 at byte 3"),
    "NUL bytes": (lambda p: _write(p / "n.txt", b"ok\x00no"), {}, r"n.txt: holds a NUL byte at byte 2"),
    "UTF-16 text": (
        lambda p: _write(p / "w.jsonl", '{"text": "hi"}'.encode("utf-16")),
        {"encoding_errors": "replace"},
        r"w.jsonl: holds a NUL byte at byte 3",
    ),
    "unknown format": (lambda p: _write(p / "t.csv", b"a,b"), {}, r"t.csv: unknown format '.csv'"),
    "jsonl line not json": (
        lambda p: _write(p / "j.jsonl", b'{"text": "a"}\n{oops\n'),
        {},
        r"j.jsonl line 2: not valid JSON",
    ),
    "jsonl line not an object": (lambda p: _write(p / "j.jsonl", b"[1, 2]\n"), {}, r"line 1: expected a JSON object"),
    "missing text field": (
        lambda p: _write(p / "j.jsonl", b'{"body": "a"}\n'),
        {},
        r"j.jsonl line 1: no 'text' field \(fields: body\)",
    ),
    "text field not text": (lambda p: _write(p / "j.jsonl", b'{"text": 5}\n'), {}, r"field 'text' is int"),
    "missing parquet column": (
        lambda p: _parquet(p / "t.parquet"),
        {},
        r"t.parquet: no column 'text' \(columns: body\)",
    ),
    "corrupt parquet": (lambda p: _write(p / "c.parquet", b"PAR1garbage"), {}, r"c.parquet: not a readable Parquet"),
    "empty folder": (lambda p: _mkdir(p / "empty"), {}, r"folder holds no .txt, .jsonl, .parquet files"),
    "folder with unknown file": (lambda p: _folder_with(p, "x.docx"), {}, r"x.docx: unknown format '.docx'"),
    "missing id field": (
        lambda p: _write(p / "j.jsonl", b'{"text": "a"}\n'),
        {"id_field": "key"},
        r"line 1: no 'key' field to use as the document id",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _parquet(path: Path) -> Path:
    pq.write_table(pa.table({"body": ["x"]}), path)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _folder_with(parent: Path, name: str) -> Path:
    folder = _mkdir(parent / "f")
    (folder / "ok.txt").write_text("fine")
    (folder / name).write_text("?")
    return folder


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_error(case: str, tmp_path: Path) -> None:
    make, options, message = BAD_INPUTS[case]
    source = make(tmp_path)
    with pytest.raises(InputError, match=message) as raised:
        read(source, **options)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("case", ["missing path", "unknown source", "empty file", "unknown format", "empty folder"])
def test_cheap_checks_catch_bad_input_without_reading(case: str, tmp_path: Path) -> None:
    make, options, message = BAD_INPUTS[case]
    with pytest.raises(InputError, match=message):
        check_source(SourceSpec(str(make(tmp_path)), **options))
