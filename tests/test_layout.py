"""n2m.layout, the build layout: which shards a build holds (tar and marker both present, the one listing every job
uses), the check of a shard against its marker, and the paths of a build's work files -- local and behind a URI."""

from __future__ import annotations

import hashlib
import json

import pytest

from n2m.errors import ShardDamaged
from n2m.layout import BuildLayout, committed_shards, parse_shard_name, shard_name, verify_shard
from n2m.storage import Store


@pytest.fixture
def root(storage_root):
    return storage_root


def _put(root: str, *names: str) -> None:
    store = Store(root)
    for name in names:
        store.write_bytes(store.path("shards", *name.split("/")), b"x")


def test_a_shard_is_committed_when_its_tar_and_its_marker_both_exist(root):
    _put(root,
         "train/train-000000.tar", "train/train-000000.json",  # committed
         "train/train-000001.tar",  # a tar never committed (no marker)
         "train/train-000002.json",  # a marker whose tar is gone
         "train/valid-000009.tar", "train/valid-000009.json",  # not a shard of the folder's split
         "train/train-12.tar", "train/train-12.json",  # not a shard name
         "test/test-000003.tar", "test/test-000003.json",
         "valid/valid-000010.tar", "valid/valid-000010.json", "valid/valid-000002.tar", "valid/valid-000002.json",
         "extra/extra-000000.tar", "extra/extra-000000.json",
         "train.tmp-12-ab/train-000004.tar", "train.tmp-12-ab/train-000004.json")
    layout = BuildLayout(root)
    found = committed_shards(root)
    assert [s.name for s in found] == ["train-000000", "valid-000002", "valid-000010", "test-000003", "extra-000000"]
    assert found[0].tar == layout.shard("train", 0) and found[0].marker == layout.shard_marker("train", 0)
    assert found[0].tar.startswith(root)  # a URI keeps its scheme
    assert [s.name for s in committed_shards(root, ["test", "valid"])] == ["valid-000002", "valid-000010",
                                                                           "test-000003"]
    assert committed_shards(root, ["nosuch"]) == [] and committed_shards(f"{root}-missing") == []


def test_verify_shard_compares_the_tar_with_its_marker(root):
    layout = BuildLayout(root)
    store = Store(root)
    data = bytes(range(256)) * 40
    tar, marker = layout.shard_files("train-000000")
    store.write_bytes(tar, data)
    store.write_json(marker, {"tar": {"bytes": len(data), "sha1": hashlib.sha1(data).hexdigest()}})
    assert verify_shard(tar)["tar"]["bytes"] == 10240
    store.write_bytes(tar, data[:-1] + b"\0")  # same size, other content
    assert verify_shard(tar, content=False)["tar"]["bytes"] == 10240
    with pytest.raises(ShardDamaged, match="does not match the SHA-1"):
        verify_shard(tar)
    store.write_bytes(tar, data[:100])
    with pytest.raises(ShardDamaged, match="has 100 bytes but its marker records 10240 .truncated"):
        verify_shard(tar, content=False)
    store.write_bytes(marker, json.dumps({"shard": "x"}).encode())
    with pytest.raises(ShardDamaged, match="records no byte count"):
        verify_shard(tar)
    store.remove(marker)
    with pytest.raises(ShardDamaged, match="has no commit marker"):
        verify_shard(tar)


def test_paths_of_a_build_and_its_work_files():
    remote, local = BuildLayout("gs://bucket/out/"), BuildLayout("/data/out")
    assert remote.shard_files("valid-000012") == ("gs://bucket/out/shards/valid/valid-000012.tar",
                                                  "gs://bucket/out/shards/valid/valid-000012.json")
    assert remote.stage_tar("train-000000_000000-000002") == "gs://bucket/out/_work/stage/train-000000_000000-000002.tar"
    assert local.plan("train-000003") == "/data/out/_work/plan/train-000003.json"
    assert local.stage_marker("c") == "/data/out/_work/stage/c.json" and local.worker_log == "/data/out/_work/workers.log"
    assert local.lock == "/data/out/build.lock" and local.label_table("v1", "test", 7) == "/data/out/labels/v1/test-000007.parquet"
    assert shard_name("train", 12) == "train-000012" and parse_shard_name("train-1234567") == ("train", 1234567)
