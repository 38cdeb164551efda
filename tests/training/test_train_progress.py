"""The progress bars ``n2m train`` draws before its first step (the shard check, the joint embeddings) follow the job's
``quiet`` through :mod:`n2m.progress`, as every other job's bars do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from builders import write_build

from n2m.clip_embed import REDUCE, save_store
from n2m.layout import BuildLayout, committed_shards
from n2m.progress import shown
from n2m.training.data import read_shards
from n2m.training.data_checks import verify_shards
from n2m.training.joint_embeddings import clip_embeddings

MODEL_SHA1 = "ab" * 20  # a joint model's content hash; every shard's embeddings are stored, so no model is loaded


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """8 train shards of one 0.5 s clip: enough for both bars (the shard check draws from 8 shards, the joint
    embeddings from 4)."""
    root = tmp_path_factory.mktemp("bars")
    write_build(root, {"train": [1] * 8}, seconds=0.5)
    return root


def _urls(build: Path) -> list[str]:
    return [shard.tar for shard in committed_shards(str(build), ["train"])]


@pytest.mark.parametrize("quiet", [False, True])
def test_the_shard_check_draws_its_bar_unless_quiet(build, capsys, quiet):
    urls = _urls(build)
    assert len(urls) == 8
    with shown(not quiet):
        verify_shards(urls)
    err = capsys.readouterr().err
    assert ("checking shards" in err) is not quiet, err
    if not quiet:
        assert "/8 [" in err  # the bar's total is every shard


@pytest.mark.parametrize("quiet", [False, True])
def test_the_joint_embeddings_draw_their_bar_unless_quiet(build, capsys, quiet):
    urls = _urls(build)
    store = BuildLayout(str(build)).embedding_dir(MODEL_SHA1[:16])
    planted = {}
    for i, shard in enumerate(committed_shards(str(build), ["train"])):
        shard_sha1 = json.loads(Path(shard.marker).read_text())["tar"]["sha1"]
        keys = [sample["__key__"] for sample in read_shards([shard.tar])]
        vectors = np.random.default_rng(i).normal(size=(len(keys), 4)).astype(np.float32)
        save_store(f"{store}/{shard_sha1}.npz", keys, vectors, [],
                   {"model_id": MODEL_SHA1, "reduce": REDUCE, "shard_sha1": shard_sha1})
        planted.update(zip(keys, vectors))
    with shown(not quiet):
        found = clip_embeddings(str(build), urls, str(build / "no-model"), MODEL_SHA1)
    err = capsys.readouterr().err
    assert ("joint embeddings:" in err) is not quiet, err  # the bar: "joint embeddings:  50%|..."
    assert "n2m train: joint embeddings of 8 clips from 8 shards (8 stored, 0 computed now)" in err  # quiet or not
    assert (found.stored, found.computed) == (8, 0)
    for key, vector in planted.items():
        assert np.array_equal(found.get(key), vector), key
