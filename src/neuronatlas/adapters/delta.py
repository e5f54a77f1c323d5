"""The published Delta table under a storage root (delta-rs): MERGE, history, time travel, restore.

On S3 the endpoint and region come from the same AWS variables as the rest of the root
(delta-rs takes them as storage options; it reads the keys from the environment itself), so
nothing secret is passed around or written down.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, QueryBuilder
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from neuronatlas.adapters.storage import S3Settings, Storage
from neuronatlas.errors import InputError, StorageError

COMMIT_RETRIES = 10
"""Concurrent publishers: Delta commits are optimistic; a MERGE that lost the race to a concurrent
commit is run again on the new version, this often, after a random backoff (0.1 s doubling)."""


class DeltaLocation:
    """Where one Delta table lives under a storage root, and how delta-rs reaches it."""

    def __init__(self, storage: Storage, rel: str) -> None:
        self.storage = storage
        self.rel = rel
        self.uri = storage.uri(rel)
        if storage.is_s3:
            self.table_uri = f"s3://{storage.path(rel)}"
            settings = S3Settings.from_env()
            options = {"AWS_REGION": settings.region}
            if settings.endpoint:
                options["AWS_ENDPOINT_URL"] = settings.endpoint
                options["AWS_ALLOW_HTTP"] = str(urlparse(settings.endpoint).scheme == "http").lower()
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                if os.environ.get(name):
                    options[name] = os.environ[name]
            self.options: dict[str, str] | None = options
        else:
            self.table_uri = storage.path(rel)
            self.options = None

    def exists(self) -> bool:
        return bool(DeltaTable.is_deltatable(self.table_uri, storage_options=self.options))

    def open(self, version: int | None = None) -> DeltaTable:
        """The table (at `version` when given); a clear error when there is none or no such version."""
        try:
            table = DeltaTable(self.table_uri, storage_options=self.options)
        except TableNotFoundError:
            raise InputError(f"{self.uri}: nothing published yet; `neuronatlas run` or `publish` makes it") from None
        except (DeltaError, OSError) as error:
            raise StorageError(f"{self.uri}: {_first_line(error)}") from None
        if version is not None:
            latest = table.version()
            if not 0 <= version <= latest:
                raise InputError(f"--version {version}: {self.uri} has versions 0 to {latest}")
            table.load_as_version(version)
        return table

    def read(self, version: int | None = None, schema: pa.Schema | None = None) -> pa.Table:
        """The rows of a version (cast to `schema` when given). Read through delta-rs's own query
        engine: its pyarrow dataset path aborted the interpreter at exit in 1 of 2 runs here
        (deltalake 1.6.6, pyarrow 26)."""
        delta = self.open(version)
        rows = pa.table(QueryBuilder().register("atlas", delta).execute("SELECT * FROM atlas"))
        return rows if schema is None else self._conform(rows, schema, delta.version())

    def _conform(self, rows: pa.Table, schema: pa.Schema, version: int) -> pa.Table:
        """`rows` in `schema`'s column order and types. A version written before a nullable
        column joined the contract reads back with that column null."""
        columns = []
        for field in schema:
            if field.name in rows.column_names:
                columns.append(rows[field.name].cast(field.type))
            elif field.nullable:
                columns.append(pa.nulls(rows.num_rows, field.type))
            else:
                raise InputError(f"{self.uri} version {version}: column {field.name} is missing")
        return pa.Table.from_arrays(columns, schema=schema)

    def row_count(self, version: int) -> int:
        """Rows of a version from the log's file statistics (no data read); read when a file has none."""
        actions = pa.table(self.open(version).get_add_actions(flatten=True))
        counts = actions["num_records"].to_pylist() if actions.num_rows else []
        if any(count is None for count in counts):
            return self.read(version).num_rows
        return int(sum(counts))

    def create(self, schema: pa.Schema, metadata: Mapping[str, str]) -> None:
        """Version 0: the empty table with its schema (so every publish is a MERGE)."""
        DeltaTable.create(
            self.table_uri,
            schema=schema,
            mode="ignore",
            name="neuronatlas",
            description="neuron explanations and scores (neuronatlas)",
            storage_options=self.options,
            commit_properties=CommitProperties(custom_metadata=dict(metadata)),
        )

    def merge(
        self,
        rows: pa.Table,
        key: tuple[str, ...],
        replace_when: str,
        metadata: Mapping[str, str],
        once: str | None = None,
    ) -> dict[str, Any] | None:
        """MERGE `rows` on `key`: matched rows are replaced where `replace_when` (SQL over
        `source` and `target`) holds, new keys inserted. Returns delta-rs's metrics and the new
        version. A commit that conflicts with a concurrent publisher is retried, unless that
        publisher's commit carries the same `metadata[once]` (it made this very change: None)."""
        predicate = " AND ".join(f"target.{name} = source.{name}" for name in key)
        for attempt in range(COMMIT_RETRIES):
            table = self.open()
            if once is not None and any(c.get(once) == metadata[once] for c in table.history()):
                return None
            try:
                metrics = (
                    table.merge(
                        rows,
                        predicate=predicate,
                        source_alias="source",
                        target_alias="target",
                        commit_properties=CommitProperties(custom_metadata=dict(metadata)),
                    )
                    .when_matched_update_all(predicate=replace_when)
                    .when_not_matched_insert_all()
                    .execute()
                )
            except CommitFailedError as error:  # another publisher committed first: merge again onto its version
                if attempt + 1 == COMMIT_RETRIES:
                    tries = f"{COMMIT_RETRIES} times"
                    raise StorageError(f"{self.uri}: MERGE failed {tries}: {_first_line(error)}") from None
                time.sleep(random.uniform(0, 0.1 * 2**attempt))
                continue
            except DeltaError as error:
                raise StorageError(f"{self.uri}: MERGE failed: {_first_line(error)}") from None
            return {**metrics, "version": table.version()}
        raise AssertionError("unreachable")

    def history(self) -> list[dict[str, Any]]:
        """Commits, newest first: version, timestamp, operation, its metrics and our metadata."""
        return list(self.open().history())

    def restore(self, version: int, metadata: Mapping[str, str]) -> None:
        self.open().restore(version, commit_properties=CommitProperties(custom_metadata=dict(metadata)))


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
