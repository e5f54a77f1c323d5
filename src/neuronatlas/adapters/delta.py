"""The published Delta table under a storage root (delta-rs): MERGE, history, time travel, and
the revert of one publish's MERGE.

On S3 the endpoint and region come from the same AWS variables as the rest of the root
(delta-rs takes them as storage options; it reads the keys from the environment itself), so
nothing secret is passed around or written down.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
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

        def attempt(table: DeltaTable) -> dict[str, Any] | None:
            if once is not None and any(c.get(once) == metadata[once] for c in table.history()):
                return None
            return (
                _merging(table, rows, key, metadata)
                .when_matched_update_all(predicate=replace_when)
                .when_not_matched_insert_all()
                .execute()
            )

        return self._commit("MERGE", attempt)

    def revert(
        self, version: int, key: tuple[str, ...], owner: tuple[str, str], schema: pa.Schema, metadata: Mapping[str, str]
    ) -> dict[str, Any] | None:
        """Undo the commit that made `version`, and only it: each row it wrote (the rows whose
        column `owner[0]` holds `owner[1]`) goes back to what `version - 1` held under its key, or
        away where that held none. Commits made since by others keep their rows, and a row one of
        them replaced since is left as they made it. A new version (None: nothing to undo)."""
        column, value = owner
        latest = self.read(None, schema)
        made = latest.filter(pc.equal(latest[column], value))  # what it wrote that nobody replaced since
        if made.num_rows == 0:
            return None
        earlier = self.read(version - 1, schema)
        keys = made.select(list(key))
        back = earlier.join(keys, list(key), join_type="inner").select(schema.names)
        gone = made.join(earlier.select(list(key)), list(key), join_type="left anti").select(schema.names)
        source = pa.concat_tables([back, gone]).append_column(
            "revert_action", pa.array(["restore"] * back.num_rows + ["delete"] * gone.num_rows)
        )
        mine = f"target.`{column}` = '{value.replace(chr(39), chr(39) * 2)}'"

        def attempt(table: DeltaTable) -> dict[str, Any]:
            return (
                _merging(table, source, key, metadata)
                .when_matched_update(
                    updates={name: f"source.`{name}`" for name in schema.names},
                    predicate=f"{mine} AND source.revert_action = 'restore'",
                )
                .when_matched_delete(predicate=f"{mine} AND source.revert_action = 'delete'")
                .execute()
            )

        return self._commit("revert", attempt)

    def _commit(self, what: str, attempt: Callable[[DeltaTable], dict[str, Any] | None]) -> dict[str, Any] | None:
        """Run `attempt` on the latest version; when a concurrent commit won the race, again on
        the new one. Its metrics and the version it made (None: `attempt` chose not to commit)."""
        for tried in range(COMMIT_RETRIES):
            table = self.open()
            try:
                metrics = attempt(table)
            except CommitFailedError as error:  # another publisher committed first: again onto its version
                if tried + 1 == COMMIT_RETRIES:
                    raise StorageError(
                        f"{self.uri}: {what} failed {COMMIT_RETRIES} times: {_first_line(error)}"
                    ) from None
                time.sleep(random.uniform(0, 0.1 * 2**tried))
                continue
            except DeltaError as error:
                raise StorageError(f"{self.uri}: {what} failed: {_first_line(error)}") from None
            return None if metrics is None else {**metrics, "version": table.version()}
        raise AssertionError("unreachable")

    def history(self) -> list[dict[str, Any]]:
        """Commits, newest first: version, timestamp, operation, its metrics and our metadata."""
        return list(self.open().history())


def _merging(table: DeltaTable, source: pa.Table, key: tuple[str, ...], metadata: Mapping[str, str]) -> Any:
    """A MERGE of `source` into `table` on `key` (aliases `source`, `target`), its commit
    carrying `metadata`: the clauses are the caller's."""
    on = " AND ".join(f"target.`{name}` = source.`{name}`" for name in key)
    return table.merge(
        source,
        predicate=on,
        source_alias="source",
        target_alias="target",
        commit_properties=CommitProperties(custom_metadata=dict(metadata)),
    )


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
