"""Corpus sources: the shipped Wikipedia summaries, local text/JSONL/Parquet files or folders,
and Hugging Face datasets saved with `save_to_disk`.

Every problem with a source is an `InputError` naming the file (and line) and what is wrong.
Undecodable bytes are rejected by default: silently altered text would change activations
without a trace. `encoding_errors="replace"` substitutes U+FFFD instead and counts them.
"""

import hashlib
import importlib.metadata
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from neuronatlas.adapters.checksums import sha256_file
from neuronatlas.core.corpus import Document
from neuronatlas.errors import InputError, require_extra

EncodingErrors = Literal["strict", "replace"]
FILE_FORMATS = (".txt", ".jsonl", ".parquet")


@dataclass(frozen=True)
class SourceSpec:
    """What to read, as the user asked for it."""

    source: str
    """A built-in source name or a path."""
    text_field: str = "text"
    """Field (JSONL) or column (Parquet, HF datasets) that holds the text."""
    id_field: str | None = None
    """Field or column that names each document; default: file and line or row number."""
    split: str | None = None
    """Split of a saved Hugging Face `DatasetDict` (default: `train`)."""
    encoding_errors: EncodingErrors = "strict"


@dataclass
class LoadedSource:
    """Documents read from a source, with what identifies the source's content."""

    label: str
    """Short name stored in the corpus `source` column."""
    kind: str
    documents: list[Document]
    fingerprint: str
    """sha256 over the source's bytes and the reading options."""
    details: dict[str, Any] = field(default_factory=dict)
    """Paths, package versions, licence and counts, for the manifest."""


def builtin_sources() -> dict[str, dict[str, Any]]:
    """Manifests of the built-in sources (`datasets/sources/*.json`)."""
    folder = resources.files("neuronatlas.datasets") / "sources"
    manifests = [json.loads(item.read_text()) for item in folder.iterdir() if item.name.endswith(".json")]
    return {manifest["name"]: manifest for manifest in manifests}


def check_source(spec: SourceSpec) -> None:
    """The cheap checks (exists, known format, not empty, package installed), without reading."""
    builtins = builtin_sources()
    if spec.source in builtins:
        _packaged_file(builtins[spec.source])
        return
    path = _existing_path(spec.source, builtins)
    if path.is_dir() and _is_saved_hf_dataset(path):
        return
    for file in _source_files(path):
        if file.stat().st_size == 0:
            raise InputError(f"{file}: file is empty")


def read_source(spec: SourceSpec) -> LoadedSource:
    """Read every document of the source into memory, or raise an `InputError`."""
    builtins = builtin_sources()
    in_package = spec.source in builtins
    loaded = _read_packaged_json(builtins[spec.source]) if in_package else _read_path(spec, builtins)
    if not any(document.text.strip() for document in loaded.documents):
        raise InputError(f"--source {spec.source}: no usable text ({len(loaded.documents)} records, all empty)")
    return loaded


def _read_packaged_json(manifest: dict[str, Any]) -> LoadedSource:
    name = manifest["name"]
    path, version = _packaged_file(manifest)
    data = path.read_bytes()
    checksum = hashlib.sha256(data).hexdigest()
    if checksum != manifest["sha256"]:
        raise InputError(f"--source {name}: {path} has sha256 {checksum}, expected {manifest['sha256']}")
    records = json.loads(data)
    documents = [
        Document(doc_id=str(record.get(manifest["id_field"]) or key), text=record.get(manifest["text_field"]) or "")
        for key, record in records.items()
    ]
    details = {"path": str(path), "package_version": version, **manifest}
    return LoadedSource(name, "builtin", documents, checksum, details)


def _packaged_file(manifest: dict[str, Any]) -> tuple[Path, str]:
    """Path and package version of a built-in source's file, read without importing the package
    (its module needs packages we do not install)."""
    try:
        distribution = importlib.metadata.distribution(manifest["distribution"])
    except importlib.metadata.PackageNotFoundError:
        raise InputError(f"--source {manifest['name']}: package {manifest['distribution']} is not installed") from None
    path = Path(str(distribution.locate_file(manifest["file"])))
    if not path.is_file():
        raise InputError(f"--source {manifest['name']}: {path} is missing from {manifest['distribution']}")
    return path, distribution.version


def _existing_path(source: str, builtins: dict[str, Any]) -> Path:
    path = Path(source).expanduser()
    if path.exists():
        return path
    if "/" in source or path.suffix:
        raise InputError(f"--source {source}: no such file or folder")
    raise InputError(
        f"--source {source}: unknown source; built-in sources are {', '.join(sorted(builtins))}, "
        "or give a path to a .txt/.jsonl/.parquet file or folder, or a saved Hugging Face dataset"
    )


def _read_path(spec: SourceSpec, builtins: dict[str, Any]) -> LoadedSource:
    path = _existing_path(spec.source, builtins)
    if path.is_dir() and _is_saved_hf_dataset(path):
        return _read_hf_dataset(path, spec)
    files = _source_files(path)
    digest = hashlib.sha256(json.dumps([spec.text_field, spec.id_field, spec.encoding_errors]).encode())
    documents: list[Document] = []
    counts = {"files": len(files), "replacement_characters": 0}
    for file in files:
        data = file.read_bytes()
        if not data:
            raise InputError(f"{file}: file is empty")
        relative = file.name if file == path else str(file.relative_to(path))
        digest.update(relative.encode() + b"\0" + hashlib.sha256(data).digest())
        documents.extend(_read_file(file, relative, data, spec, counts))
    details = {"path": str(path.resolve()), "files": [str(f) for f in files], **counts}
    return LoadedSource(path.resolve().name, "files", documents, digest.hexdigest(), details)


def _source_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in FILE_FORMATS:
            raise InputError(f"{path}: unknown format '{path.suffix}' (supported: {', '.join(FILE_FORMATS)})")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
    for file in files:
        if file.suffix.lower() not in FILE_FORMATS:
            raise InputError(f"{file}: unknown format '{file.suffix}' (supported: {', '.join(FILE_FORMATS)})")
    if not files:
        raise InputError(f"--source {path}: folder holds no {', '.join(FILE_FORMATS)} files")
    return files


def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "_")) for part in relative.parts)


def _read_file(file: Path, relative: str, data: bytes, spec: SourceSpec, counts: dict[str, int]) -> Iterator[Document]:
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        yield from _read_parquet(file, relative, spec)
        return
    text = _decode(file, data, spec.encoding_errors)
    if spec.encoding_errors == "replace":
        counts["replacement_characters"] += text.count("\ufffd")
    if suffix == ".txt":
        yield Document(doc_id=relative, text=text)
    else:
        yield from _read_jsonl(file, relative, text, spec)


def _decode(file: Path, data: bytes, errors: EncodingErrors) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:  # valid UTF-8, but no text holds it: a binary file, or UTF-16 text
        raise InputError(f"{file}: holds a NUL byte at byte {nul}: a binary file or UTF-16 text, not UTF-8")
    try:
        return data.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as error:
        raise InputError(
            f"{file}: not valid UTF-8 at byte {error.start} ({error.reason}); "
            "re-encode it, or pass --encoding-errors replace to substitute U+FFFD"
        ) from None


def _read_jsonl(file: Path, relative: str, text: str, spec: SourceSpec) -> Iterator[Document]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{file} line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{file} line {number}: expected a JSON object, got {type(record).__name__}")
        yield Document(
            doc_id=_doc_id(record, spec.id_field, f"{relative}:{number}", f"{file} line {number}"),
            text=_text(record, spec.text_field, f"{file} line {number}"),
        )


def _read_parquet(file: Path, relative: str, spec: SourceSpec) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise InputError(f"{file}: not a readable Parquet file ({str(error).splitlines()[0]})") from None
    for row_number, record in enumerate(_rows(table, spec, str(file))):
        yield Document(
            doc_id=_doc_id(record, spec.id_field, f"{relative}:{row_number}", f"{file} row {row_number}"),
            text=_text(record, spec.text_field, f"{file} row {row_number}"),
        )


def _rows(table: Any, spec: SourceSpec, where: str) -> Iterator[dict[str, Any]]:
    """Rows of an Arrow table, restricted to the text and id columns, which must exist."""
    columns = [spec.text_field] + ([spec.id_field] if spec.id_field else [])
    for column in columns:
        if column not in table.column_names:
            raise InputError(f"{where}: no column '{column}' (columns: {', '.join(table.column_names)})")
    yield from table.select(columns).to_pylist()


def _text(record: dict[str, Any], field_name: str, where: str) -> str:
    if field_name not in record:
        raise InputError(f"{where}: no '{field_name}' field (fields: {', '.join(map(str, record)) or 'none'})")
    value = record[field_name]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{where}: field '{field_name}' is {type(value).__name__}, expected text")
    return value


def _doc_id(record: dict[str, Any], id_field: str | None, default: str, where: str) -> str:
    if id_field is None:
        return default
    if record.get(id_field) is None:
        raise InputError(f"{where}: no '{id_field}' field to use as the document id")
    return str(record[id_field])


def _is_saved_hf_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _read_hf_dataset(path: Path, spec: SourceSpec) -> LoadedSource:
    # Looked up by name (typed Any): run from the repository root, a type checker would take the
    # project's own `datasets/` folder for Hugging Face's library.
    require_extra("datasets.load", "hf-datasets", f"--source {path}")
    hf_datasets = importlib.import_module("datasets")
    try:
        loaded = hf_datasets.load_from_disk(str(path))
    except Exception as error:  # datasets raises several types for a damaged folder
        raise InputError(f"{path}: not a readable saved Hugging Face dataset ({error})") from None
    split = None
    if isinstance(loaded, hf_datasets.DatasetDict):
        split = spec.split or "train"
        if split not in loaded:
            raise InputError(f"{path}: no split '{split}' (splits: {', '.join(loaded)}); choose one with --split")
        loaded = loaded[split]
    prefix = f"{split}:" if split else ""
    documents = [
        Document(
            doc_id=_doc_id(record, spec.id_field, f"{prefix}{number}", f"{path} row {number}"),
            text=_text(record, spec.text_field, f"{path} row {number}"),
        )
        for number, record in enumerate(_rows(loaded.data.table, spec, str(path)))
    ]
    digest = hashlib.sha256(json.dumps([spec.text_field, spec.id_field, split]).encode())
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + bytes.fromhex(sha256_file(file)))
    details = {"path": str(path.resolve()), "split": split, "rows": len(documents)}
    return LoadedSource(path.resolve().name, "huggingface", documents, digest.hexdigest(), details)
