"""n2m.storage, the one storage layer: atomic writes, reads, listing, removal and moves behave the same on a local
folder and behind an fsspec URI (``memory://`` here, which stands for gs:// and s3:// in tests)."""

from __future__ import annotations

import pytest

from n2m.storage import TMP_MARK, Store, exists, glob, is_remote, join, parent, read_bytes, read_json, write_json


@pytest.fixture
def root(storage_root):
    return storage_root


def test_is_remote_and_join():
    assert is_remote("gs://bucket/x") and is_remote("memory://x") and is_remote("HTTPS://host/a")
    assert not is_remote("/data/x") and not is_remote("file:///data/x") and not is_remote("relative/x")
    assert join("gs://bucket/out/", "shards", "train") == "gs://bucket/out/shards/train"
    assert join("/data/out", "shards", "train") == "/data/out/shards/train"
    assert parent("gs://bucket/out/a.json") == "gs://bucket/out" and parent("/data/out/a.json") == "/data/out"


def test_an_interrupted_write_leaves_the_old_file_and_no_leftover(root):
    store = Store(root)
    path = store.path("sub", "x.bin")
    store.write_bytes(path, b"old")
    with pytest.raises(RuntimeError), store.atomic_writer(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("killed")
    assert read_bytes(path) == b"old"
    assert store.listdir(store.path("sub")) == ["x.bin"]
    store.write_bytes(path, b"new")
    assert read_bytes(path) == b"new" and store.listdir(store.path("sub")) == ["x.bin"]


def test_json_is_written_sorted_and_indented(root):
    path = join(root, "a.json")
    write_json(path, {"b": [2], "a": 1})
    assert read_bytes(path) == b'{\n  "a": 1,\n  "b": [\n    2\n  ]\n}\n'
    write_json(path, {"b": 1, "a": {"c": None}}, indent=1)
    assert read_bytes(path) == b'{\n "a": {\n  "c": null\n },\n "b": 1\n}\n'
    assert read_json(path) == {"a": {"c": None}, "b": 1}


def test_listing_globbing_removing_and_moving_folders(root):
    store = Store(root)
    for name in ("b.json", "a.json", "a.tar", f"c.tar{TMP_MARK}12-ab"):
        store.write_bytes(store.path("dir", name), name.encode())
    assert store.listdir(store.path("dir")) == ["a.json", "a.tar", "b.json", f"c.tar{TMP_MARK}12-ab"]
    assert store.listdir(store.path("missing")) == []
    found = glob(store.path("dir", "*.json"))
    assert [p.rsplit("/", 1)[-1] for p in found] == ["a.json", "b.json"]
    assert all(exists(p) for p in found) and is_remote(found[0]) == is_remote(root)
    assert store.remove_tmp_files(store.path("dir")) == 1
    store.remove(store.path("dir", "b.json"))
    store.remove(store.path("dir", "b.json"))  # already gone: nothing happens
    store.move_dir(store.path("dir"), store.path("moved"))
    assert not store.exists(store.path("dir")) and store.listdir(store.path("moved")) == ["a.json", "a.tar"]
    assert read_bytes(store.path("moved", "a.tar")) == b"a.tar"
    store.rmtree(store.path("moved"))
    store.rmtree(store.path("moved"))
    assert not store.exists(store.path("moved"))


def test_file_uris_are_local_paths(tmp_path):
    store = Store(f"file://{tmp_path}")
    assert store.local
    store.write_bytes(f"file://{tmp_path}/x.txt", b"x")
    assert (tmp_path / "x.txt").read_bytes() == b"x" and store.listdir(f"file://{tmp_path}") == ["x.txt"]
