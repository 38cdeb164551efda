"""n2m label when its inputs are not what they should be (issue 14): a rebuilt build, names that leave the build, an
interrupted --overwrite, damaged shards, unusable vocabulary entries, numbers out of range."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CAPTIONS, write_build, write_vocab

from n2m.cli import build_parser, main
from n2m.errors import JobFailed, ShardDamaged, UserError
from n2m.labeling.vocabset import open_vocabularies
from n2m.layout import BuildLayout
from n2m.schema import VOCAB_SCHEMA, text_id

IN_MEMORY = ["--", "--direct_running_mode=in_memory"]
SHORT = ["piano", "drums", "violin", "guitar", "synth", "jazz"]


def _label(*argv: str) -> int:
    parser = build_parser({"label": ("pseudo-labels", "n2m.labeling.cli")})
    args = parser.parse_args(["label", *argv])
    return args.func(args)


def _shards(prefix: str) -> dict:
    return {"train": [[{"uri": f"/music/{prefix}{i}.wav", "seconds": 6, "freq": 200 + 90 * i} for i in range(2)]],
            "valid": [[{"uri": f"/music/{prefix}v.wav", "seconds": 6, "freq": 640}]]}


@pytest.fixture()
def build(tmp_path, micro_clap_dir):
    out = tmp_path / "out"
    clips = write_build(out, _shards("a"))
    long = write_vocab(tmp_path / "long.parquet", CAPTIONS, "long")
    short = write_vocab(tmp_path / "short.parquet", SHORT, "short")
    base = ["--build", str(out), "--vocab", long, "--vocab", short, "--model", micro_clap_dir, "--k", "3",
            "--k-prime", "1,2"]
    return {"out": out, "clips": clips, "base": base, "tmp": tmp_path}


def _keys(label_dir: Path) -> set[str]:
    return {k for p in label_dir.glob("*.parquet") for k in pq.read_table(p, columns=["key"])["key"].to_pylist()}


def _index_keys(out: Path) -> set[str]:
    return set(pq.read_table(out / "index.parquet", columns=["key"])["key"].to_pylist())


def _rebuild(out: Path, prefix: str, build_id: str) -> dict:
    """What ``n2m build --overwrite`` with other inputs leaves: new shards under the same names and a new build id,
    while OUT/embeddings and OUT/labels of the old build are still there."""
    shutil.rmtree(out / "shards")
    return write_build(out, _shards(prefix), build_id=build_id)


def test_a_rebuilt_build_is_labelled_from_its_own_audio_and_old_label_sets_are_refused(build):
    assert _label(*build["base"], "--name", "v1", *IN_MEMORY) == 0
    assert _keys(build["out"] / "labels" / "v1") == _index_keys(build["out"])
    _rebuild(build["out"], "b", "test-build-2")
    with pytest.raises(UserError, match="made from build test-build-1"):
        _label(*build["base"], "--name", "v1", *IN_MEMORY)
    # a vocabulary with unusable entries (item 15) rides along: it must not stop the job
    dirty = build["tmp"] / "dirty.parquet"
    rows = [{"id": text_id(t), "text": t, "kind": "short"} for t in SHORT]
    rows += [{"id": "n0", "text": None, "kind": "short"}, {"id": "b0", "text": "  \t ", "kind": "short"},
             {"id": text_id("piano"), "text": "piano again", "kind": "short"}]
    full = [{"aspect": "", "track_id": "", "backend": "t", "model": "", "prompt_id": "", **r} for r in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=VOCAB_SCHEMA), dirty)
    argv = [*build["base"][:2], "--vocab", str(dirty), *build["base"][6:]]
    assert _label(*argv, "--name", "v2", *IN_MEMORY) == 0
    label_dir = build["out"] / "labels" / "v2"
    assert _keys(label_dir) == _index_keys(build["out"])  # not the keys of the old build's cached embeddings
    manifest = json.loads((label_dir / "manifest.json").read_text())
    assert manifest["build"]["id"] == "test-build-2" and manifest["counts"]["embeddings_cached_shards"] == 0
    assert manifest["vocabularies"][0]["dropped"] == {"blank_text": 1, "duplicate_id": 1, "null_text": 1}
    captions = {c for p in label_dir.glob("*.parquet") for cs in pq.read_table(p)["captions"].to_pylist() for c in cs}
    assert captions <= set(SHORT)


def test_vocabulary_entries_without_text_or_with_a_repeated_id_are_left_out_with_reasons(tmp_path):
    rows = [{"id": "a", "text": "calm piano", "kind": "long"}, {"id": "b", "text": None, "kind": "long"},
            {"id": "c", "text": " ", "kind": "long"}, {"id": "a", "text": "calm piano!", "kind": "long"},
            {"id": None, "text": "no id", "kind": "long"}, {"id": "d", "text": "fast drums", "kind": "short"},
            {"id": "d", "text": "fast drums", "kind": "short"}]
    path = tmp_path / "v.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(n, pa.string()) for n in ("id", "text", "kind")])),
                   path)
    long, short = open_vocabularies([str(path)])
    assert (long.size, dict(long.dropped)) == (1, {"null_text": 1, "blank_text": 1, "duplicate_id": 1, "null_id": 1})
    assert long.table().to_pylist() == [{"id": "a", "text": "calm piano"}]
    assert (short.size, dict(short.dropped)) == (1, {"duplicate_id": 1})
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows[1:3], schema=pa.schema([(n, pa.string()) for n in ("id", "text",
                                                                                                     "kind")])), bad)
    with pytest.raises(UserError, match="none of its 2 long entries is usable"):
        open_vocabularies([str(bad)])



@pytest.mark.parametrize(("columns", "needle"), [
    ({"id": ["a", "b"], "text": [1.5, 2.0], "kind": ["long", "long"]}, "column 'text' holds double, not text"),
    ({"id": [1, 2], "text": ["calm piano", "fast drums"], "kind": ["long", "long"]}, "column 'id' holds int64"),
])
def test_vocabulary_columns_that_are_not_text_are_one_line_errors(tmp_path, columns, needle):
    """VOCAB_SCHEMA's id, text and kind are strings; other types would fail deep inside the job."""
    path = tmp_path / "v.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(UserError, match=needle):
        open_vocabularies([str(path)])

@pytest.mark.parametrize("name", ["../../x", "..", ".", "", "a/b", ".hidden", "x\0y", "tab\there", " v1"])
def test_label_set_names_that_leave_the_labels_folder_are_refused(build, name):
    before = sorted(str(p.relative_to(build["tmp"])) for p in build["tmp"].rglob("*"))
    with pytest.raises(UserError, match="--name"):
        _label(*build["base"], "--name", name, "--overwrite", *IN_MEMORY)
    assert sorted(str(p.relative_to(build["tmp"])) for p in build["tmp"].rglob("*")) == before
    with pytest.raises(UserError, match="label set name"):
        BuildLayout(str(build["out"])).label_dir(name)


def test_overwrite_keeps_the_old_set_until_the_new_one_is_complete(build):
    assert _label(*build["base"], "--name", "v1", *IN_MEMORY) == 0
    label_dir = build["out"] / "labels" / "v1"
    before = {p.name: p.read_bytes() for p in label_dir.glob("*.parquet")}
    manifest = (label_dir / "manifest.json").read_text()
    # the rebuild fails: a shard's content no longer matches its marker (same size, one byte changed)
    shard = build["out"] / "shards" / "train" / "train-000000.tar"
    good = shard.read_bytes()
    shard.write_bytes(good[:600] + bytes([good[600] ^ 0xFF]) + good[601:])
    shutil.rmtree(build["out"] / "embeddings")  # nothing cached: the worker must read the tar
    with pytest.raises(JobFailed, match="previous label set is unchanged.*SHA-1"):
        _label(*build["base"], "--name", "v1", "--seed", "5", "--overwrite", *IN_MEMORY)
    assert {p.name: p.read_bytes() for p in label_dir.glob("*.parquet")} == before
    assert (label_dir / "manifest.json").read_text() == manifest
    shard.write_bytes(good)
    assert _label(*build["base"], "--name", "v1", "--seed", "5", "--overwrite", *IN_MEMORY) == 0
    assert json.loads((label_dir / "manifest.json").read_text())["seed"] == 5
    assert _keys(label_dir) == _index_keys(build["out"])
    assert [p.name for p in (build["out"] / "labels").iterdir()] == ["v1"]  # no work folder left behind


def test_a_label_set_behind_an_fsspec_url_is_labelled_and_overwritten(build, monkeypatch):
    """The whole job on a build behind a URI (memory:// stands for gs://): text-embedding caches, embeddings, tables and
    manifest go through n2m.storage, and --overwrite swaps the new set in and removes its work folders."""
    import fsspec

    from n2m.schema import read_label_captions

    monkeypatch.chdir(build["tmp"])  # anything written to a local folder named after the URI would land here
    fs = fsspec.filesystem("memory")
    root = f"memory://n2m-label-{build['tmp'].name}/out"
    fs.put(str(build["out"]), root, recursive=True)
    base = [root if arg == str(build["out"]) else arg for arg in build["base"]]
    try:
        assert _label(*base, "--name", "v1", *IN_MEMORY) == 0
        assert _label(*base, "--name", "v1", "--seed", "5", "--overwrite", *IN_MEMORY) == 0
        assert json.loads(fs.cat(f"{root}/labels/v1/manifest.json"))["seed"] == 5
        assert [p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/labels", detail=False)] == ["v1"]
        assert set(read_label_captions(f"{root}/labels/v1")) == _index_keys(build["out"])
        assert sorted(p.name for p in build["tmp"].iterdir()) == ["long.parquet", "out", "short.parquet"]
    finally:
        fs.rm(root.rsplit("/", 1)[0], recursive=True)


def test_a_truncated_shard_is_refused_before_any_work(build):
    shard = build["out"] / "shards" / "train" / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(ShardDamaged, match=r"has 3000 bytes but its marker records \d+ \(truncated"):
        _label(*build["base"], "--name", "v1", *IN_MEMORY)
    assert not (build["out"] / "labels").exists()


def test_clap_train_checks_shards_against_their_markers(build, tmp_path):
    manifest = tmp_path / "captions.jsonl"
    manifest.write_text("".join(json.dumps({"path": f"/music/a{i}.wav", "caption": CAPTIONS[i]}) + "\n"
                                for i in range(2)))
    shard = build["out"] / "shards" / "train" / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[:-512])
    with pytest.raises(ShardDamaged, match="truncated"):
        main_args = ["clap-train", "--build", str(build["out"]), "--captions", str(manifest), "--out",
                     str(tmp_path / "clap"), "--preset", "micro", "--max-steps", "1", "--batch-size", "2"]
        parser = build_parser({"clap-train": ("clap", "n2m.labeling.clap_train_cli")})
        args = parser.parse_args(main_args)
        args.func(args)


@pytest.mark.parametrize(("flag", "value"), [("--k", "0"), ("--batch-size", "-1"), ("--min-tail-s", "nan"),
                                             ("--entry-block", "2.5"), ("--text-batch", "inf")])
def test_numbers_out_of_range_are_one_line_errors(build, capsys, flag, value):
    with pytest.raises(SystemExit) as done:
        main(["label", *build["base"], "--name", "v1", flag, value])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"n2m label: error: argument {flag}: expected")


def test_a_clap_directory_whose_weights_do_not_fit_is_refused(build, micro_clap_dir, tmp_path):
    import torch
    from safetensors.torch import save_file

    clap = tmp_path / "clap"
    shutil.copytree(micro_clap_dir, clap)
    save_file({"encoder.weight": torch.zeros(3)}, str(clap / "model.safetensors"))
    argv = [a if a != micro_clap_dir else str(clap) for a in build["base"]]
    with pytest.raises(UserError, match="missing"):
        _label(*argv, "--name", "v1", "--dry-run", *IN_MEMORY)


def test_a_clap_directory_with_corrupt_weights_is_a_one_line_error(build, micro_clap_dir, tmp_path):
    clap = tmp_path / "clap"
    shutil.copytree(micro_clap_dir, clap)
    (clap / "model.safetensors").write_bytes(b"\x00" * 64)  # an 8-byte header length of 0, then no JSON header
    argv = [a if a != micro_clap_dir else str(clap) for a in build["base"]]
    with pytest.raises(UserError, match="cannot load CLAP model"):
        _label(*argv, "--name", "v1", "--dry-run", *IN_MEMORY)
