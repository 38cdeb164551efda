"""``n2m label`` on Beam's DaskRunner over a real 2-worker ``distributed.LocalCluster``: label sets byte-identical to
the DirectRunner's (a corrupt clip and a damaged shard included), the driver's guard against a shard the runner did not
score, and the one Beam option convention on this job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="the Dask tests need the dask extra: pip install 'n2m[dask]'")

from conftest import CAPTIONS, write_build, write_vocab  # noqa: E402

from n2m.beam import local_dask_cluster  # noqa: E402
from n2m.cli import build_parser, main  # noqa: E402
from n2m.errors import JobFailed  # noqa: E402
from n2m.labeling.job import LabelSettings, global_counts, shard_refs, text_cache_path  # noqa: E402
from n2m.labeling.vocabset import open_vocabularies  # noqa: E402
from n2m.layout import BuildLayout  # noqa: E402
from n2m.schema import clip_key, source_id  # noqa: E402

pytestmark = pytest.mark.timeout(240)
SHORT = ["piano", "drums", "violin", "guitar", "synth", "jazz", "rock", "calm"]
CORRUPT = clip_key(source_id("/music/b0.wav"), 0)


@pytest.fixture(scope="module")
def cluster() -> str:
    with local_dask_cluster(2, verbose=False) as address:
        yield address


@pytest.fixture()
def setup(tmp_path, micro_clap_dir):
    shards = {"train": [[{"uri": f"/music/a{i}.wav", "seconds": 12, "freq": 220 * (i + 1)} for i in range(2)],
                        [{"uri": f"/music/b{i}.wav", "seconds": 8, "freq": 300 + 50 * i} for i in range(2)],
                        [{"uri": "/music/d.wav", "seconds": 6, "freq": 700}]],
              "valid": [[{"uri": "/music/c.wav", "seconds": 14, "freq": 500}]]}
    out = tmp_path / "out"
    write_build(out, shards, corrupt={CORRUPT})
    long = write_vocab(tmp_path / "long.parquet", CAPTIONS, "long")
    short = write_vocab(tmp_path / "short.parquet", SHORT, "short")
    base = ["label", "--build", str(out), "--vocab", long, "--vocab", short, "--model", micro_clap_dir, "--k", "4",
            "--k-prime", "2,3"]
    return {"out": out, "base": base, "model": micro_clap_dir, "vocabs": [long, short]}


def _label_set(folder: Path) -> dict[str, bytes]:
    """Tables and shard markers of a label set, byte for byte (timings and whether stored embeddings were reused are
    left out of the markers)."""
    files = {p.name: p.read_bytes() for p in folder.glob("*.parquet")}
    for marker in (folder / "_markers").glob("*.json"):
        doc = json.loads(marker.read_text())
        kept = {k: v for k, v in doc.items() if not k.endswith("_s") and k != "embeddings_cached"}
        files[marker.name] = json.dumps(kept, sort_keys=True).encode()
    return files


def test_dask_label_set_is_byte_identical_to_the_direct_runner(setup, cluster, capsys):
    out = setup["out"]
    assert main([*setup["base"], "--name", "direct", "--", "--direct_running_mode=in_memory"]) == 0
    assert main([*setup["base"], "--name", "dask", "--runner", "DaskRunner", f"--dask_client_address={cluster}"]) == 0
    assert "on DaskRunner on the Dask cluster at" in capsys.readouterr().out
    direct, dask = _label_set(out / "labels" / "direct"), _label_set(out / "labels" / "dask")
    assert direct == dask and len(direct) == 8
    manifests = [json.loads((out / "labels" / n / "manifest.json").read_text()) for n in ("direct", "dask")]
    counts = [{k: v for k, v in m["counts"].items() if k != "embeddings_cached_shards"} for m in manifests]
    assert counts[0] == counts[1] and counts[0]["labelled"] == 5 and counts[0]["failed"] == 1
    assert manifests[0]["failures"] == manifests[1]["failures"] and manifests[1]["failures"][0]["key"] == CORRUPT


def test_a_damaged_shard_fails_the_job_the_same_way_on_both_runners(setup, cluster, capsys):
    """A shard whose bytes no longer match its marker (same size, one byte flipped): the job fails naming it, and the
    other shards are labelled identically."""
    out = setup["out"]
    tar = out / "shards" / "train" / "train-000002.tar"
    data = bytearray(tar.read_bytes())
    data[600] ^= 0xFF
    tar.write_bytes(bytes(data))
    for name, flags in (("direct", ["--", "--direct_running_mode=in_memory"]),
                        ("dask", ["--runner", "DaskRunner", f"--dask_client_address={cluster}"])):
        assert main([*setup["base"], "--name", name, *flags]) == 1
        error = capsys.readouterr().err.strip().splitlines()[-1]  # after the text-embedding progress bars
        assert error.startswith("n2m label: error: 1 shard(s) produced no labels: shard ")
        assert "train-000002.tar" in error
        assert "does not match the SHA-1 in its marker" in error
    assert _label_set(out / "labels" / "direct") == _label_set(out / "labels" / "dask")
    assert sorted(p.name for p in (out / "labels" / "dask").glob("*.parquet")) == [
        "train-000000.parquet", "train-000001.parquet", "valid-000000.parquet"]


def test_a_shard_the_runner_did_not_score_fails_the_job(setup):
    """The driver's guard between the two jobs: a shard with no top-K lists that is not damaged was lost."""
    out = setup["out"]
    assert main([*setup["base"], "--name", "v1", "--", "--direct_running_mode=in_memory"]) == 0
    label_dir = out / "labels" / "v1"
    manifest = json.loads((label_dir / "manifest.json").read_text())
    vocabs = open_vocabularies(setup["vocabs"])
    embed_dir = BuildLayout(str(out)).embedding_dir(manifest["model"]["sha1"][:16])
    settings = LabelSettings(
        build=str(out), name="v1", out_dir=str(label_dir), build_id=manifest["build"]["id"], model=setup["model"],
        model_id=manifest["model"]["sha1"], vocabs=tuple(vocabs),
        text_caches=tuple(text_cache_path(embed_dir, v) for v in vocabs), k=4, k_prime=(2, 3), seed=0, batch_size=8,
        device="cpu", entry_block=32_768, min_tail_s=None, threads=1)
    shards = shard_refs(str(out), [])
    scored, damaged = global_counts(settings, shards)
    assert scored == shards and damaged == []
    (label_dir / "_topk" / "valid-000000.npz").unlink()
    with pytest.raises(JobFailed, match="1 of 4 shards have no top-K lists \\(valid-000000\\)"):
        global_counts(settings, shards)


def test_label_takes_beam_flags_the_way_build_does(setup, capsys):
    parser = build_parser({"label": ("", "n2m.labeling.cli")})

    def dry_run(*flags: str) -> dict:
        args = parser.parse_args([*setup["base"], "--name", "x", "--dry-run", *flags])
        assert args.func(args) == 0
        return json.loads(capsys.readouterr().out)

    assert dry_run("--direct_num_workers=3")["beam_args"] == dry_run("--", "--direct_num_workers=3")["beam_args"]
    assert dry_run("--dask-workers", "2")["runner"] == "DaskRunner on a local Dask cluster of 2 worker(s)"
    for flags in (["--bogus_flag=1"], ["--", "--bogus_flag=1"]):
        assert main([*setup["base"], "--name", "x", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert "unknown option(s) for this job or Beam: --bogus_flag" in err and len(err.splitlines()) == 1
