"""Storage against a local folder and a real S3-compatible server (moto): every read and write,
the staged commit protocol, and the errors a person sees when S3 is missing or unreachable.

Tests that take `root` run twice, once per kind of root. What is really stored is checked
independently of `Storage`: with boto3 on S3, with the file system locally.
"""

import os
import socket
import time
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neuronatlas.adapters.storage import MANIFEST, STAGING, Storage
from neuronatlas.errors import StorageError
from tests.support import S3_ENV, free_port, read_only

SECRET = S3_ENV["AWS_SECRET_ACCESS_KEY"]

TABLE_SCHEMA = pa.schema(
    [
        pa.field("sequence_id", pa.int64(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("token_ids", pa.list_(pa.int32()), nullable=False),
    ]
)


def sample_table(first_id: int = 0, rows: int = 3) -> pa.Table:
    return pa.table(
        {
            "sequence_id": list(range(first_id, first_id + rows)),
            "doc_id": [f"doc-{i}" for i in range(first_id, first_id + rows)],
            "token_ids": [[i, i + 1, i + 2] for i in range(first_id, first_id + rows)],
        },
        schema=TABLE_SCHEMA,
    )


def raw_entries(storage: Storage) -> list[str]:
    """Everything really stored under the root, relative to it, read without `Storage`.

    S3: every object key (a key ending in `/` is a folder marker). Local: every file and every
    folder (folders end in `/`). Empty when the root does not exist.
    """
    if storage.is_s3:
        bucket, _, prefix = storage.base.partition("/")
        client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        return sorted(key[len(prefix) + 1 :] if prefix else key for key in keys)
    base = Path(storage.base)
    if not base.exists():
        return []
    return sorted(f"{p.relative_to(base)}/" if p.is_dir() else str(p.relative_to(base)) for p in base.rglob("*"))


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        assert SECRET not in str(text), f"credential leaked in: {text}"


def assert_error_is_clean(error: BaseException) -> None:
    """Neither the error nor what it was raised from (shown in a traceback) holds the secret."""
    assert_no_secret(error, repr(error), error.__cause__, repr(error.__cause__), error.__context__)


# -- plain files ------------------------------------------------------------------------------


def test_json_round_trip(root: str) -> None:
    storage = Storage.open(root)
    value = {"name": "corpus ü", "rows": 3, "nested": {"list": [1, 2.5, None, True]}, "empty": {}}
    storage.write_json("meta/info.json", value)
    assert storage.read_json("meta/info.json") == value
    storage.write_json("meta/info.json", {"rows": 4})  # overwrite replaces, not merges
    assert storage.read_json("meta/info.json") == {"rows": 4}
    assert raw_entries(storage) in (["meta/", "meta/info.json"], ["meta/info.json"])


def test_bytes_round_trip(root: str) -> None:
    storage = Storage.open(root)
    data = bytes(range(256)) * 1000  # binary, with NUL bytes, 256 kB
    storage.write_bytes("a/b/c.bin", data)
    storage.write_bytes("empty.bin", b"")
    assert storage.read_bytes("a/b/c.bin") == data
    assert storage.read_bytes("empty.bin") == b""
    storage.write_bytes("a/b/c.bin", b"shorter")
    assert storage.read_bytes("a/b/c.bin") == b"shorter"


def test_exists_and_list(root: str) -> None:
    storage = Storage.open(root)
    assert not storage.exists("a")
    assert storage.list("a") == []
    assert storage.list("") == []
    storage.write_bytes("a/two.txt", b"2")
    storage.write_bytes("a/one.txt", b"1")
    storage.write_bytes("a/sub/deep.txt", b"3")
    storage.write_bytes("other.txt", b"4")
    assert storage.exists("a")
    assert storage.exists("a/one.txt")
    assert storage.exists("a/sub")
    assert storage.exists("a/sub/deep.txt")
    assert not storage.exists("a/three.txt")
    assert not storage.exists("a/on")  # a prefix of a name is not a name
    # Direct children only, sorted, no temporary files left by atomic writes.
    assert storage.list("a") == ["one.txt", "sub", "two.txt"]
    assert storage.list("a/sub") == ["deep.txt"]
    assert storage.list("") == ["a", "other.txt"]
    assert storage.list("missing/folder") == []


def test_read_of_a_missing_file_is_a_storage_error_naming_it(root: str) -> None:
    storage = Storage.open(root)
    storage.write_bytes("present.txt", b"x")
    for read in (storage.read_bytes, storage.read_json, storage.read_parquet):
        with pytest.raises(StorageError) as caught:
            read("missing/thing")
        assert str(caught.value).startswith(storage.uri("missing/thing") + ":")
        assert_error_is_clean(caught.value)


def test_delete_dir(root: str) -> None:
    storage = Storage.open(root)
    storage.write_bytes("keep/x.txt", b"x")
    storage.write_bytes("gone/x.txt", b"x")
    storage.write_parquet("gone/sub/part-0.parquet", sample_table())
    storage.delete_dir("gone")
    assert not storage.exists("gone")
    assert not storage.exists("gone/sub/part-0.parquet")
    assert storage.list("") == ["keep"]
    assert storage.read_bytes("keep/x.txt") == b"x"
    assert not any(entry.startswith("gone") for entry in raw_entries(storage))
    storage.delete_dir("never-existed")  # no error
    assert storage.list("") == ["keep"]


# -- parquet ----------------------------------------------------------------------------------


def test_parquet_round_trip(root: str) -> None:
    storage = Storage.open(root)
    table = sample_table(rows=100)
    storage.write_parquet("t/part-0.parquet", table)
    assert storage.read_parquet("t").equals(table)
    assert storage.read_parquet("t", schema=TABLE_SCHEMA).equals(table)
    assert storage.read_parquet("t/part-0.parquet").equals(table)  # a single file, too


def test_parquet_dictionary_encodes_only_columns_that_are_not_floating_point(tmp_path: Path) -> None:
    storage = Storage.open(str(tmp_path))
    table = pa.table(
        {
            "kind": pa.array(["top", "bottom"] * 50),
            "neuron": pa.array(range(100), pa.int32()),
            "score": pa.array([0.5] * 100, pa.float32()),
            "activations": pa.array([[0.25, 1.0]] * 100, pa.list_(pa.float32())),
        }
    )
    storage.write_parquet("t/part-0.parquet", table)
    row_group = pq.ParquetFile(tmp_path / "t" / "part-0.parquet").metadata.row_group(0)
    encodings = {row_group.column(i).path_in_schema: row_group.column(i).encodings for i in range(4)}
    assert "RLE_DICTIONARY" in encodings["kind"] and "RLE_DICTIONARY" in encodings["neuron"]
    assert "RLE_DICTIONARY" not in encodings["score"]
    assert "RLE_DICTIONARY" not in encodings["activations.list.element"]
    assert storage.read_parquet("t").equals(table)


def test_parquet_reads_every_part_and_skips_underscore_files(root: str) -> None:
    storage = Storage.open(root)
    storage.write_parquet("t/part-00000.parquet", sample_table(0))
    storage.write_parquet("t/part-00001.parquet", sample_table(3))
    storage.write_json(f"t/{MANIFEST}", {"rows": 6})
    storage.write_bytes("t/.hidden", b"not parquet")
    table = storage.read_parquet("t", schema=TABLE_SCHEMA).sort_by("sequence_id")
    assert table.equals(pa.concat_tables([sample_table(0), sample_table(3)]))


def test_parquet_hive_partitions_become_columns(root: str) -> None:
    storage = Storage.open(root)
    storage.write_parquet("x/layer=3/part-0.parquet", pa.table({"neuron": [0, 1], "score": [0.5, 0.25]}))
    storage.write_parquet("x/layer=3/part-1.parquet", pa.table({"neuron": [2], "score": [0.0]}))
    storage.write_parquet("x/layer=11/part-0.parquet", pa.table({"neuron": [7], "score": [1.0]}))
    table = storage.read_parquet("x")
    assert table.column_names == ["neuron", "score", "layer"]
    assert pa.types.is_integer(table.schema.field("layer").type)
    rows = sorted(table.to_pylist(), key=lambda row: (row["layer"], row["neuron"]))
    assert rows == [
        {"neuron": 0, "score": 0.5, "layer": 3},
        {"neuron": 1, "score": 0.25, "layer": 3},
        {"neuron": 2, "score": 0.0, "layer": 3},
        {"neuron": 7, "score": 1.0, "layer": 11},
    ]
    only_three = storage.read_parquet("x/layer=3")
    assert sorted(only_three.column("neuron").to_pylist()) == [0, 1, 2]


# -- staged datasets --------------------------------------------------------------------------


def stage(storage: Storage, dataset: str, tables: list[pa.Table]) -> str:
    staging = storage.new_staging(dataset)
    for index, table in enumerate(tables):
        storage.write_parquet(f"{staging}/part-{index:05d}.parquet", table)
    return staging


def assert_nothing_staged(storage: Storage) -> None:
    assert storage.list(STAGING) == []
    assert not storage.exists(STAGING)
    leftovers = [entry for entry in raw_entries(storage) if entry.startswith(STAGING)]
    assert leftovers == [], f"left under {STAGING}: {leftovers}"


def test_commit_protocol(root: str) -> None:
    storage = Storage.open(root)
    dataset = "corpus/c1"
    staging = stage(storage, dataset, [sample_table(0), sample_table(3)])
    assert staging.startswith(f"{STAGING}/{dataset}/")
    assert storage.list(staging) == ["part-00000.parquet", "part-00001.parquet"]
    assert not storage.is_committed(dataset)
    assert not storage.exists(dataset)  # nothing outside the staging area yet

    manifest = {"dataset": "corpus", "rows": 6, "files": ["part-00000.parquet", "part-00001.parquet"]}
    storage.commit(staging, dataset, manifest)

    assert storage.is_committed(dataset)
    assert storage.manifest(dataset) == manifest
    assert storage.list(dataset) == [MANIFEST, "part-00000.parquet", "part-00001.parquet"]
    table = storage.read_parquet(dataset, schema=TABLE_SCHEMA).sort_by("sequence_id")
    assert table.equals(pa.concat_tables([sample_table(0), sample_table(3)]))
    assert_nothing_staged(storage)


def test_second_commit_of_a_dataset_is_refused(root: str) -> None:
    storage = Storage.open(root)
    dataset = "corpus/c1"
    storage.commit(stage(storage, dataset, [sample_table(0)]), dataset, {"rows": 3})
    second = stage(storage, dataset, [sample_table(100, rows=5)])
    with pytest.raises(StorageError, match="already committed") as caught:
        storage.commit(second, dataset, {"rows": 5})
    assert storage.uri(dataset) in str(caught.value)
    # The committed dataset is untouched.
    assert storage.manifest(dataset) == {"rows": 3}
    assert storage.read_parquet(dataset, schema=TABLE_SCHEMA).equals(sample_table(0))
    assert storage.list(dataset) == [MANIFEST, "part-00000.parquet"]


def test_dataset_without_manifest_is_not_committed_and_is_replaced(root: str) -> None:
    storage = Storage.open(root)
    dataset = "corpus/c1"
    # A crash mid-commit: parts moved into place, manifest never written.
    storage.write_parquet(f"{dataset}/part-00000.parquet", sample_table(500))
    storage.write_parquet(f"{dataset}/part-00007.parquet", sample_table(600))
    assert storage.exists(dataset)
    assert not storage.is_committed(dataset)
    with pytest.raises(StorageError, match="no committed dataset") as caught:
        storage.manifest(dataset)
    assert str(caught.value).startswith(storage.uri(dataset) + ":")

    storage.commit(stage(storage, dataset, [sample_table(0)]), dataset, {"rows": 3})
    assert storage.is_committed(dataset)
    assert storage.manifest(dataset) == {"rows": 3}
    assert storage.list(dataset) == [MANIFEST, "part-00000.parquet"]  # stale part-00007 gone
    assert storage.read_parquet(dataset, schema=TABLE_SCHEMA).equals(sample_table(0))


def test_new_staging_is_fresh_and_drops_earlier_attempts(root: str) -> None:
    storage = Storage.open(root)
    first = stage(storage, "corpus/c1", [sample_table(0)])
    second = storage.new_staging("corpus/c1")
    assert second != first
    assert second.startswith(f"{STAGING}/corpus/c1/")
    assert not storage.exists(first)
    assert storage.list(second) == []


def test_discard_staging_leaves_nothing_under_staging(root: str) -> None:
    storage = Storage.open(root)
    staging_a = stage(storage, "corpus/a", [sample_table(0)])
    staging_b = stage(storage, "corpus/b", [sample_table(3)])
    storage.discard_staging("corpus/a")
    assert not storage.exists(staging_a)
    assert storage.list(f"{STAGING}/corpus") == ["b"]  # another dataset's staging is kept
    assert storage.read_parquet(staging_b, schema=TABLE_SCHEMA).equals(sample_table(3))
    storage.discard_staging("corpus/b")
    assert_nothing_staged(storage)
    assert not storage.is_committed("corpus/a")
    assert not storage.is_committed("corpus/b")
    storage.discard_staging("corpus/never-staged")  # no error
    assert_nothing_staged(storage)


def test_a_folder_another_writer_removed_meanwhile_is_no_error(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two Dask workers commit two layers of one run at once: each removes the emptied staging
    parents after its commit, and one finds a folder the other just removed."""
    storage = Storage.open(root)
    stage(storage, "explanations/e-1/layer=0", [sample_table(0)])
    seen_once = set()

    def exists_then_vanishes(rel: str) -> bool:  # True once more after the folder is gone
        if rel not in seen_once and rel.startswith(STAGING):
            seen_once.add(rel)
            return True
        return real_exists(rel)

    real_exists = storage.exists
    storage.discard_staging("explanations/e-1/layer=0")
    monkeypatch.setattr(storage, "exists", exists_then_vanishes)
    storage.discard_staging("explanations/e-1/layer=0")  # every folder on the way is gone: no error
    storage.delete_dir(f"{STAGING}/explanations")
    assert_nothing_staged(storage)


# -- opening a root ---------------------------------------------------------------------------


def test_open_writes_nothing(root: str) -> None:
    storage = Storage.open(root)
    assert raw_entries(storage) == []
    if not storage.is_s3:
        assert not Path(root).exists()
    assert storage.list("") == []
    assert not storage.exists("")


def test_open_local_refuses_a_file_and_other_schemes(tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(StorageError, match="exists and is not a folder"):
        Storage.open(str(a_file))
    with pytest.raises(StorageError, match="unsupported scheme"):
        Storage.open("gs://bucket/prefix")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_uri_names_the_root_and_never_holds_credentials(root: str) -> None:
    storage = Storage.open(root)
    expected_root = root if storage.is_s3 else str(Path(root).resolve())
    assert storage.uri() == expected_root
    assert storage.uri("corpus/c1/") == f"{expected_root}/corpus/c1"
    assert_no_secret(storage.uri(), storage.uri("corpus/c1"), storage.root, storage.base)


def test_s3_missing_bucket(s3_env: str) -> None:
    with pytest.raises(StorageError) as caught:
        Storage.open("s3://no-such-bucket-xyz/p")
    message = str(caught.value)
    assert "'no-such-bucket-xyz' does not exist" in message
    assert s3_env in message
    assert "\n" not in message
    assert_error_is_clean(caught.value)
    client = boto3.client("s3", endpoint_url=s3_env)
    assert "no-such-bucket-xyz" not in [b["Name"] for b in client.list_buckets()["Buckets"]]  # not created


def test_s3_no_bucket_name(s3_env: str) -> None:
    with pytest.raises(StorageError, match="no bucket name"):
        Storage.open("s3:///prefix")


def test_s3_unreachable_endpoint_fails_fast_and_names_it(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        Storage.open(f"s3://{s3_bucket}/atlas")
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert elapsed < 15, f"took {elapsed:.1f} s to give up on a closed port"
    assert f"cannot reach S3 endpoint {endpoint}" in message
    assert f"s3://{s3_bucket}/atlas" in message
    assert "\n" not in message
    assert_error_is_clean(caught.value)


def test_s3_endpoint_variable_for_s3_wins(s3_bucket: str, s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_env)
    storage = Storage.open(f"s3://{s3_bucket}/atlas")
    storage.write_json("x.json", {"ok": True})
    assert storage.read_json("x.json") == {"ok": True}


def test_no_credential_in_any_error(root: str, tmp_path: Path) -> None:
    storage = Storage.open(root)
    dataset = "corpus/c1"
    storage.commit(stage(storage, dataset, [sample_table()]), dataset, {"rows": 3})
    failures = [
        lambda: storage.read_bytes("missing"),
        lambda: storage.read_parquet("missing"),
        lambda: storage.manifest("corpus/missing"),
        lambda: storage.commit(stage(storage, dataset, [sample_table()]), dataset, {}),
    ]
    for failure in failures:
        with pytest.raises(StorageError) as caught:
            failure()
        assert_error_is_clean(caught.value)


def test_s3_root_with_credentials_in_it_does_not_echo_them(s3_bucket: str) -> None:
    """`s3://key:secret@bucket/...` (a form some tools accept) must not put the secret in an error."""
    root = f"s3://{S3_ENV['AWS_ACCESS_KEY_ID']}:{SECRET}@{s3_bucket}/atlas"
    with pytest.raises(StorageError) as caught:
        Storage.open(root)
    assert_error_is_clean(caught.value)


def test_s3_endpoint_that_never_answers_fails_without_a_long_hang(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It accepts connections and never answers: the first request gives up after its probe's
    allowance (5 s, one retry), not the data requests' (20 s, three tries: about 64 s before)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    started = time.monotonic()
    try:
        with pytest.raises(StorageError, match=f"cannot reach S3 endpoint {endpoint}.*Timeout"):
            Storage.open(f"s3://{s3_bucket}/atlas")
    finally:
        silent.close()
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"took {elapsed:.1f} s to give up on an endpoint that never answers"


def test_a_root_that_cannot_be_written_is_refused_and_the_probe_leaves_nothing(root: str, tmp_path: Path) -> None:
    storage = Storage.open(root)
    storage.check_writable()  # a root not made yet: probed where it would be made
    assert raw_entries(storage) in ([], [f"{STAGING}/"])  # on S3, pyarrow keeps the folder of a deleted object
    if not storage.is_s3:
        assert not Path(root).exists()
        folder = tmp_path / "kept"
        folder.mkdir()
        with read_only(folder), pytest.raises(StorageError, match=f"--root {folder}/atlas: cannot write in {folder}"):
            Storage.open(str(folder / "atlas")).check_writable()
        assert list(folder.iterdir()) == []
