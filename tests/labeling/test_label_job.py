"""n2m label end to end on a tiny build: outputs, scores, determinism, resume per shard, corrupt clips, re-scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import CAPTIONS, write_build, write_vocab

from n2m.audio import decode
from n2m.clap import ClapEmbedder
from n2m.cli import build_parser
from n2m.errors import UserError
from n2m.labeling.embed import read_samples
from n2m.schema import LABELS_SCHEMA, clip_key, read_label_captions, source_id

SHORT = ["piano", "drums", "violin", "guitar", "synth", "jazz", "rock", "calm", "fast", "slow", "bass", "pad"]
IN_MEMORY = ["--", "--direct_running_mode=in_memory"]
CORRUPT = clip_key(source_id("/music/b1.wav"), 0)


def _label(*argv: str) -> int:
    parser = build_parser({"label": ("pseudo-labels", "n2m.labeling.cli")})
    args = parser.parse_args(["label", *argv])
    return args.func(args)


@pytest.fixture()
def setup(tmp_path, micro_clap_dir):
    shards = {
        "train": [[{"uri": f"/music/a{i}.wav", "seconds": 12, "freq": 220 * (i + 1)} for i in range(3)],
                  [{"uri": f"/music/b{i}.wav", "seconds": 8, "freq": 300 + 50 * i} for i in range(2)]],
        "valid": [[{"uri": "/music/c.wav", "seconds": 25, "freq": 500}]],
    }
    clips = write_build(tmp_path / "out", shards, corrupt={CORRUPT})
    long = write_vocab(tmp_path / "long.parquet", CAPTIONS, "long")
    short = write_vocab(tmp_path / "short.parquet", SHORT, "short")
    base = ["--build", str(tmp_path / "out"), "--vocab", long, "--vocab", short, "--model", micro_clap_dir,
            "--k", "5", "--k-prime", "2,3"]
    return {"out": tmp_path / "out", "clips": clips, "base": base, "tmp": tmp_path}


def _rows(label_dir: Path) -> list[dict]:
    return [r for p in sorted(label_dir.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_label_outputs_scores_and_failures(setup, micro_clap_dir):
    assert _label(*setup["base"], "--name", "v1", *IN_MEMORY) == 0
    label_dir = setup["out"] / "labels" / "v1"
    assert sorted(p.name for p in label_dir.glob("*.parquet")) == ["train-000000.parquet", "train-000001.parquet",
                                                                   "valid-000000.parquet"]
    assert pq.read_schema(label_dir / "train-000000.parquet").remove_metadata() == LABELS_SCHEMA
    rows = _rows(label_dir)
    good = sorted(k for k in setup["clips"] if k != CORRUPT)
    assert sorted({r["key"] for r in rows}) == good
    assert len(rows) == 2 * len(good)
    # scores from an independent brute-force computation over the decoded shard audio
    embedder = ClapEmbedder.from_pretrained(micro_clap_dir)
    short_text = embedder.embed_text(SHORT)
    audio = {}
    for shard in (setup["out"] / "shards").glob("*/*.tar"):
        for key, members in read_samples(str(shard)):
            if key != CORRUPT:
                decoded = decode(members["flac"])
                audio[key] = embedder.embed_audio([decoded.samples], decoded.sample_rate)[0]
    for row in rows:
        assert len(row["topk_ids"]) == 5 and row["topk_scores"] == sorted(row["topk_scores"], reverse=True)
        assert len(row["captions"]) == (2 if row["kind"] == "long" else 3)
        if row["vocab"] == "short":
            scores = short_text @ audio[row["key"]]
            np.testing.assert_allclose(row["topk_scores"], np.sort(scores)[::-1][:5], atol=1e-5)
            top_texts = {SHORT[i] for i in np.argsort(-scores)[:5]}
            assert set(row["captions"]) <= top_texts
    manifest = json.loads((label_dir / "manifest.json").read_text())
    assert manifest["counts"]["failed"] == 1 and manifest["failures"][0]["key"] == CORRUPT
    assert manifest["failures"][0]["reason"] == "truncated"
    assert manifest["build"]["id"] == "test-build-1"
    assert manifest["model"]["sha1"] == embedder.model_id
    assert {v["name"]: v["k_prime"] for v in manifest["vocabularies"]} == {"long": 2, "short": 3}
    assert all(v["sha1"] for v in manifest["vocabularies"]) and manifest["versions"]["torch"]
    captions = read_label_captions(str(label_dir))
    assert len(captions[good[0]]["long"]) == 2 and len(captions[good[0]]["short"]) == 3


def test_deterministic_and_seed_dependent(setup):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert _label(*setup["base"], "--name", name, "--seed", seed, *IN_MEMORY) == 0
    a, b, c = (_rows(setup["out"] / "labels" / n) for n in "abc")
    assert a == b
    assert [r["topk_ids"] for r in a] == [r["topk_ids"] for r in c]
    assert [r["captions"] for r in a] != [r["captions"] for r in c]


def test_resume_per_shard_and_rescoring_reuses_audio_embeddings(setup):
    assert _label(*setup["base"], "--name", "v1", *IN_MEMORY) == 0
    label_dir = setup["out"] / "labels" / "v1"
    before = _rows(label_dir)
    kept = {p: p.stat().st_mtime_ns for p in label_dir.glob("*.parquet") if p.name != "train-000001.parquet"}
    for path in (label_dir / "train-000001.parquet", label_dir / "_markers" / "train-000001.json",
                 label_dir / "_topk" / "train-000001.npz"):
        path.unlink()
    assert _label(*setup["base"], "--name", "v1", *IN_MEMORY) == 0
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # untouched
    assert _rows(label_dir) == before
    manifest = json.loads((label_dir / "manifest.json").read_text())
    assert manifest["counts"]["embeddings_cached_shards"] == 1  # the redone shard reused its stored audio embeddings
    # a new vocabulary: new label set, same stored audio embeddings
    other = write_vocab(setup["tmp"] / "moods.parquet", ["calm", "happy", "sad", "dark"], "short")
    argv = ["--build", str(setup["out"]), "--vocab", other, "--model", setup["base"][7], "--k", "2", "--name", "m"]
    assert _label(*argv, *IN_MEMORY) == 0
    manifest = json.loads((setup["out"] / "labels" / "m" / "manifest.json").read_text())
    assert manifest["counts"]["embeddings_cached_shards"] == 3


def test_conflicting_settings_need_overwrite(setup):
    assert _label(*setup["base"], "--name", "v1", *IN_MEMORY) == 0
    with pytest.raises(UserError, match="other settings"):
        _label(*setup["base"], "--name", "v1", "--seed", "5", *IN_MEMORY)
    assert _label(*setup["base"], "--name", "v1", "--seed", "5", "--overwrite", *IN_MEMORY) == 0


def test_bad_inputs_are_one_line_errors(setup, tmp_path):
    with pytest.raises(UserError, match="no shards"):
        _label(*[a if a != str(setup["out"]) else str(tmp_path / "nowhere") for a in setup["base"]], "--name", "x")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(UserError, match="not a Parquet file"):
        _label(*setup["base"], "--vocab", str(bad), "--name", "x")
    with pytest.raises(UserError, match="k-prime"):
        _label(*setup["base"], "--k-prime", "a,b", "--name", "x")
