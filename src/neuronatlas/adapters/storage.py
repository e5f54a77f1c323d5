"""One storage root for everything: a local folder or `s3://bucket/prefix`.

The same code path serves both through pyarrow's filesystems. S3 endpoint and credentials come
from the standard AWS variables (`AWS_ENDPOINT_URL[_S3]`, `AWS_ACCESS_KEY_ID`, ...), read when a
root is opened, never at import; credentials are left to the AWS SDK and never logged.

Datasets are written to `_staging/<dataset>/<txn>/`, validated there, then committed: moved into
place, and `_manifest.json` written last. A dataset folder without a manifest is not committed
(a crash mid-commit); readers refuse it and the next commit replaces it.
"""

from __future__ import annotations

import builtins
import json
import os
import uuid
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from neuronatlas.errors import StorageError

MANIFEST = "_manifest.json"
PROBE_TIMEOUT_S = 5
STAGING = "_staging"


@dataclass(frozen=True)
class S3Settings:
    """Where an S3-compatible endpoint is, from the standard AWS variables."""

    endpoint: str | None
    region: str

    @classmethod
    def from_env(cls) -> S3Settings:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return cls(endpoint=endpoint or None, region=region)

    def filesystem(self, probe: bool = False) -> pafs.S3FileSystem:
        """`probe`: for the first request to a root, which should fail fast on an endpoint that
        accepts connections and never answers (5 s, one retry) rather than wait out the data
        requests' allowance (20 s, three tries)."""
        options: dict[str, Any] = {
            "region": self.region,
            "connect_timeout": 3,
            "request_timeout": PROBE_TIMEOUT_S if probe else 20,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=2 if probe else 3),
        }
        if self.endpoint:
            # pyarrow ignores AWS_ENDPOINT_URL: pass the endpoint ourselves.
            parsed = urlparse(self.endpoint)
            options["endpoint_override"] = parsed.netloc or parsed.path
            options["scheme"] = parsed.scheme or "https"
        return pafs.S3FileSystem(**options)


class Storage:
    """Reads and writes under one root; every path argument is relative to it."""

    def __init__(self, root: str, fs: pafs.FileSystem, base: str) -> None:
        self.root = root
        self.fs = fs
        self.base = base.rstrip("/")
        self.is_s3 = isinstance(fs, pafs.S3FileSystem)

    @classmethod
    def open(cls, root: str) -> Storage:
        """Check the root can be used (reachable, bucket present) without writing anything."""
        if root.startswith("s3://"):
            return cls._open_s3(root)
        if "://" in root:
            raise StorageError(f"--root {root}: unsupported scheme; use a local folder or s3://bucket/prefix")
        path = Path(root).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise StorageError(f"--root {root}: exists and is not a folder")
        return cls(str(path), pafs.LocalFileSystem(), str(path))

    @classmethod
    def _open_s3(cls, root: str) -> Storage:
        parsed = urlparse(root)
        bucket, prefix = parsed.netloc, parsed.path.strip("/")
        if "@" in bucket:  # s3://key:secret@bucket: never echo it, never accept it
            raise StorageError("--root: credentials in the root address are refused; use the AWS_* variables")
        if not bucket:
            raise StorageError(f"--root {root}: no bucket name (expected s3://bucket/prefix)")
        settings = S3Settings.from_env()
        where = settings.endpoint or "the default AWS endpoint"
        fs = settings.filesystem()
        try:
            info = settings.filesystem(probe=True).get_file_info(bucket)
        except (OSError, ValueError) as error:
            reason = str(error).splitlines()[0]
            raise StorageError(f"--root {root}: cannot reach S3 endpoint {where}: {reason}") from None
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"--root {root}: bucket '{bucket}' does not exist at {where}")
        return cls(root.rstrip("/"), fs, f"{bucket}/{prefix}" if prefix else bucket)

    def check_writable(self) -> None:
        """Refuse a root this process cannot write before any work (or LLM spending) starts: a
        probe object written and deleted (on S3 under `_staging/`, which pyarrow then keeps as an
        empty folder marker; for a local root not made yet, in the nearest folder above it that
        exists, so that a refused run leaves no folder)."""
        if self.is_s3:
            probe = f"{STAGING}/write-probe-{uuid.uuid4().hex}"
            try:
                self.fs.open_output_stream(self.path(probe)).close()
                self.fs.delete_file(self.path(probe))
            except OSError as error:
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise StorageError(f"--root {self.root}: cannot write here ({reason})") from None
            return
        folder = Path(self.base)
        while not folder.exists():
            folder = folder.parent
        try:
            with open(folder / f".neuronatlas-write-probe-{uuid.uuid4().hex}", "xb") as handle:
                os.unlink(handle.name)
        except OSError as error:
            raise StorageError(f"--root {self.root}: cannot write in {folder} ({error.strerror})") from None

    # -- paths -------------------------------------------------------------------------------
    def path(self, rel: str) -> str:
        return f"{self.base}/{rel.strip('/')}" if rel else self.base

    def uri(self, rel: str = "") -> str:
        """A location to show a person (never holds credentials)."""
        return f"{self.root}/{rel.strip('/')}" if rel else self.root

    # -- plain files -------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self._call(rel, lambda: self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound)

    def list(self, rel: str) -> list[str]:
        """Names directly under `rel` (empty when it does not exist)."""
        selector = pafs.FileSelector(self.path(rel), allow_not_found=True)
        infos = self._call(rel, lambda: self.fs.get_file_info(selector))
        return sorted(info.base_name for info in infos)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self._ensure_parent(rel)
        self._call(rel, lambda: self._write_atomic(rel, data))

    def read_bytes(self, rel: str) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path(rel)) as stream:
                return bytes(stream.read())

        return self._call(rel, read)

    def write_json(self, rel: str, value: Any) -> None:
        self.write_bytes(rel, json.dumps(value, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def delete_dir(self, rel: str) -> None:
        if self.exists(rel):
            self._call(rel, partial(self._delete_if_there, rel))

    def _delete_if_there(self, rel: str) -> None:
        """Delete a folder that another writer (a Dask worker committing another layer) may have
        removed in the meantime."""
        with suppress(FileNotFoundError):
            self.fs.delete_dir(self.path(rel))

    # -- parquet -----------------------------------------------------------------------------
    def write_parquet(self, rel: str, table: pa.Table) -> None:
        """zstd; dictionary encoding only for columns that are not floating point (per-token
        activations rarely repeat: a dictionary there costs a third of the write and saves nothing)."""
        self._ensure_parent(rel)
        encoded = [field.name for field in table.schema if not _floating(field.type)]
        self._call(
            rel,
            lambda: pq.write_table(
                table, self.path(rel), filesystem=self.fs, compression="zstd", use_dictionary=encoded
            ),
        )

    def read_parquet(self, rel: str, schema: pa.Schema | None = None) -> pa.Table:
        """Every `.parquet` file under `rel`, hive partitions (`key=value` folders) as columns;
        names starting with `_` or `.` (manifests, staging) and other files (plots) are skipped."""
        base = self.path(rel)
        kind = self._call(rel, lambda: self.fs.get_file_info(base)).type
        if kind == pafs.FileType.NotFound:
            raise StorageError(f"{self.uri(rel)}: does not exist")
        files = [base] if kind == pafs.FileType.File else self._parquet_files(rel)
        dataset = self._call(
            rel,
            lambda: pads.dataset(
                sorted(files),
                filesystem=self.fs,
                format="parquet",
                schema=schema,
                partitioning=pads.HivePartitioning.discover(),
                partition_base_dir=base,
            ),
        )
        return self._call(rel, dataset.to_table)

    def _parquet_files(self, rel: str) -> builtins.list[str]:  # `list` is a method here
        base = self.path(rel)
        infos = self._call(rel, lambda: self.fs.get_file_info(pafs.FileSelector(base, recursive=True)))
        return [
            info.path
            for info in infos
            if info.type == pafs.FileType.File
            and info.path.endswith(".parquet")
            and not any(part.startswith(("_", ".")) for part in info.path[len(base) + 1 :].split("/"))
        ]

    # -- staged datasets ---------------------------------------------------------------------
    def is_committed(self, dataset: str) -> bool:
        return self.exists(f"{dataset}/{MANIFEST}")

    def manifest(self, dataset: str) -> dict[str, Any]:
        if not self.is_committed(dataset):
            raise StorageError(f"{self.uri(dataset)}: no committed dataset here")
        manifest: dict[str, Any] = self.read_json(f"{dataset}/{MANIFEST}")
        return manifest

    def new_staging(self, dataset: str) -> str:
        """A fresh staging folder for `dataset`; stale ones from crashed attempts are removed."""
        self.delete_dir(f"{STAGING}/{dataset}")
        return f"{STAGING}/{dataset}/{uuid.uuid4().hex}"

    def discard_staging(self, dataset: str) -> None:
        self.delete_dir(f"{STAGING}/{dataset}")
        self._remove_empty_parents(f"{STAGING}/{dataset}")

    def commit(self, staging: str, dataset: str, manifest: dict[str, Any]) -> None:
        """Move staged files into `dataset`, then write its manifest: the commit point."""
        if self.is_committed(dataset):
            raise StorageError(f"{self.uri(dataset)}: already committed; refusing to overwrite")
        self.delete_dir(dataset)  # files of an earlier attempt that crashed mid-commit
        self._move_dir(staging, dataset)
        self.write_json(f"{dataset}/{MANIFEST}", manifest)
        self.discard_staging(dataset)

    def replace(self, staging: str, dataset: str, manifest: dict[str, Any]) -> None:
        """Commit over an already committed dataset (a rerun that retried failed rows): the old
        manifest goes first, so a crash midway leaves the dataset uncommitted, never mixed."""
        if self.is_committed(dataset):
            self._call(dataset, partial(self.fs.delete_file, self.path(f"{dataset}/{MANIFEST}")))
        self.commit(staging, dataset, manifest)

    # -- internals ---------------------------------------------------------------------------
    def _move_dir(self, source: str, target: str) -> None:
        if not self.is_s3:
            self._ensure_parent(target)
            self._call(target, lambda: self.fs.move(self.path(source), self.path(target)))
            return
        # S3 has no rename: copy object by object (server side), then drop the source.
        selector = pafs.FileSelector(self.path(source), recursive=True)
        infos = self._call(source, lambda: self.fs.get_file_info(selector))
        for info in infos:
            if info.type == pafs.FileType.File:
                destination = self.path(f"{target}/{info.path[len(self.path(source)) + 1 :]}")
                self._call(target, partial(self.fs.copy_file, info.path, destination))
        self.delete_dir(source)

    def _remove_empty_parents(self, rel: str) -> None:
        """Remove folders left without files by a discarded staging area. (pyarrow keeps an S3
        "folder" alive with a marker object when its last file goes: those are removed too.)"""
        parts = rel.strip("/").split("/")
        for depth in range(len(parts) - 1, 0, -1):
            folder = "/".join(parts[:depth])
            selector = pafs.FileSelector(self.path(folder), recursive=True, allow_not_found=True)
            infos = self._call(folder, lambda selector=selector: self.fs.get_file_info(selector))
            if self.exists(folder) and not any(info.type == pafs.FileType.File for info in infos):
                self._call(folder, partial(self._delete_if_there, folder))

    def _ensure_parent(self, rel: str) -> None:
        if not self.is_s3:
            parent = self.path(rel).rsplit("/", 1)[0]
            self._call(rel, lambda: self.fs.create_dir(parent, recursive=True))

    def _write_atomic(self, rel: str, data: bytes) -> None:
        if self.is_s3:  # a PUT is atomic
            with self.fs.open_output_stream(self.path(rel)) as stream:
                stream.write(data)
            return
        temporary = f"{self.path(rel)}.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(temporary) as stream:
            stream.write(data)
        self.fs.move(temporary, self.path(rel))

    def _call(self, rel: str, operation: Any) -> Any:
        try:
            return operation()
        except OSError as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise StorageError(f"{self.uri(rel)}: {reason}") from error


def _floating(data_type: pa.DataType) -> bool:
    """Floating point, or a list of it."""
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type):
        return _floating(data_type.value_type)
    return bool(pa.types.is_floating(data_type))
