"""The pieces of ``n2m build`` without Beam: segmentation, splits, listing, fetching, duplicates, shard files, CLI errors."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from build_helpers import music

from n2m import audio
from n2m.cli import main
from n2m.errors import UserError
from n2m.pipelines.clips import ClipSettings, make_clips, segment_bounds
from n2m.pipelines.fetch import FetchError, FetchSettings, fetch
from n2m.pipelines.job import chunk_size, parse_chunk_name, pick_duplicates, plan_chunks
from n2m.pipelines.shards import TarAssembler, assign_split, parse_splits, plan_shards, sample_bytes, tar_member
from n2m.pipelines.sources import ListingStats, Source, canonical_uri, iter_sources
from n2m.schema import source_id


@pytest.mark.parametrize(
    ("total", "clip", "hop", "minimum", "expected"),
    [
        (100, 10, 10, 5, [(k, 10 * k, 10 * k + 10) for k in range(10)]),  # exact fit: no tail
        (105, 10, 10, 5, [*[(k, 10 * k, 10 * k + 10) for k in range(10)], (10, 100, 105)]),  # tail of 5 kept
        (104, 10, 10, 5, [(k, 10 * k, 10 * k + 10) for k in range(10)]),  # tail of 4 dropped
        (25, 10, 5, 5, [(0, 0, 10), (1, 5, 15), (2, 10, 20), (3, 15, 25)]),  # overlap, ends exactly
        (27, 10, 5, 5, [(0, 0, 10), (1, 5, 15), (2, 10, 20), (3, 15, 25), (4, 20, 27)]),  # first partial window only
        (7, 10, 10, 5, [(0, 0, 7)]),  # shorter than a clip, longer than the minimum: one padded clip
        (30, 10, 15, 5, [(0, 0, 10), (1, 15, 25)]),  # gaps between clips; tail [30, 30) is empty
    ],
)
def test_segment_bounds(total, clip, hop, minimum, expected):
    settings = ClipSettings(sample_rate=1, clip_s=clip, hop_s=hop, min_clip_s=minimum)
    assert segment_bounds(total, settings) == expected


def test_clips_padding_and_silence_filter():
    sr = 8000
    loud = 0.5 * np.sin(2 * np.pi * 440 * np.arange(int(2.5 * sr)) / sr)
    x = np.concatenate([loud[: 2 * sr], np.zeros(2 * sr), loud[: sr // 2 + sr]])[None].astype(np.float32)  # 5.5 s
    settings = ClipSettings(sample_rate=sr, clip_s=2.0, hop_s=2.0, min_clip_s=1.0, silence_db=-60.0)
    clips, silent = make_clips(x, settings)
    assert silent == 1 and [c.index for c in clips] == [0, 2]  # the silent clip 1 is dropped, indices stay positional
    tail = clips[1]
    assert tail.padded and tail.offset_s == 4.0 and tail.duration_s == 1.5
    pcm = audio.decode(tail.flac).samples
    assert pcm.shape == (1, 2 * sr) and not np.any(pcm[:, int(1.5 * sr):])
    assert abs(tail.rms_db - 20 * np.log10(0.5 / np.sqrt(2))) < 0.05


def test_splits_parse_and_assign_by_hash():
    splits = parse_splits("train=0.8,valid=0.1,test=0.1")
    ids = [source_id(f"/music/{i}.wav") for i in range(20000)]
    counts = {name: sum(assign_split(i, splits) == name for i in ids) for name, _ in splits}
    for name, fraction in splits:  # within 5 binomial standard deviations
        assert abs(counts[name] - fraction * len(ids)) < 5 * np.sqrt(len(ids) * fraction * (1 - fraction))
    assert [assign_split(i, splits) for i in ids[:50]] == [assign_split(i, splits) for i in ids[:50]]
    for bad in ("train=0.5,valid=0.4", "train=0.5,train=0.5", "train", "train=x", "a-b=1"):
        with pytest.raises(UserError):
            parse_splits(bad)


def test_plan_groups_sources_per_split_in_order():
    splits = parse_splits("train=0.5,test=0.5")
    sources = [Source(f"/m/{i}.wav") for i in range(11)]
    specs = list(plan_shards(sources, splits, per_shard=2))
    assert sum(len(s.sources) for s in specs) == 11
    for split, _ in splits:
        mine = [s for s in specs if s.split == split]
        assert [s.index for s in mine] == list(range(len(mine)))
        listed = [src for s in mine for src in s.sources]
        assert listed == [src for src in sources if assign_split(src.source_id, splits) == split]
    assert [s.spec_hash("x") for s in specs] == [s.spec_hash("x") for s in plan_shards(sources, splits, 2)]
    assert specs[0].spec_hash("x") != specs[0].spec_hash("y")


def test_a_manifest_split_column_pins_the_source():
    """A row's ``split`` names the split whatever the fractions; a value the build does not have fails the source."""
    splits = parse_splits("train=1,valid=0")
    sources = [Source("/m/a.wav", {"split": "valid"}), Source("/m/b.wav", {"split": " train "}),
               Source("/m/c.wav", {"split": "eval"}), Source("/m/d.wav", {"split": 3}), Source("/m/e.wav")]
    placed = {src.uri: (spec.split, src) for spec in plan_shards(sources, splits, per_shard=10) for src in spec.sources}
    assert placed["/m/a.wav"][0] == "valid" and placed["/m/b.wav"][0] == "train" and placed["/m/e.wav"][0] == "train"
    assert not placed["/m/a.wav"][1].error and not placed["/m/e.wav"][1].error
    for uri, shown in (("/m/c.wav", "'eval'"), ("/m/d.wav", "3")):
        split, failed = placed[uri]
        assert split == "train" and failed.reason == "bad_manifest_row"
        assert failed.error == f"manifest split {shown} is not one of the build's splits (train, valid)"


def test_canonical_uris(tmp_path):
    assert canonical_uri("HTTPS://Example.COM:443/a/b.mp3#frag") == "https://example.com/a/b.mp3"
    assert canonical_uri("http://example.com:8080") == "http://example.com:8080/"
    assert canonical_uri("a/../b.wav", str(tmp_path)) == str(tmp_path / "b.wav")
    assert canonical_uri(f"file://{tmp_path}/x.wav") == str(tmp_path / "x.wav")
    assert canonical_uri("S3://bucket/Key.wav") == "s3://bucket/Key.wav"
    assert canonical_uri("c.wav", "gs://bucket/dir") == "gs://bucket/dir/c.wav"


def test_directory_listing_is_sorted_filtered_and_skips_output(tmp_path):
    for name in ("b/2.wav", "b/1.FLAC", "a.mp3", ".hidden/x.wav", "cover.jpg", "out/shard.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    stats = ListingStats()
    listed = [s.uri for s in iter_sources(str(tmp_path), exclude=(str(tmp_path / "out"),), stats=stats)]
    assert listed == [str(tmp_path / n) for n in ("a.mp3", "b/1.FLAC", "b/2.wav")]
    assert stats.skipped_files == 1
    assert [s.uri for s in iter_sources(str(tmp_path / "b" / "*.wav"))] == [str(tmp_path / "b/2.wav")]


def test_manifests_carry_metadata_and_captions(tmp_path):
    (tmp_path / "csv.csv").write_text("\ufeffpath,title,caption\nx.wav,X,calm piano\nx.wav,again,\n,no path,,surplus\n")
    stats = ListingStats()
    rows = list(iter_sources(str(tmp_path / "csv.csv"), stats=stats))
    assert stats.repeated_uris == 1 and len(rows) == 2
    assert rows[0].uri == str(tmp_path / "x.wav") and rows[0].text == ("calm piano",)
    assert rows[0].meta == {"title": "X", "caption": "calm piano"}
    assert rows[1].error and rows[1].uri.endswith("csv.csv#line=4") and rows[1].meta["_extra"] == ["surplus"]
    table = pa.table({"url": ["http://h/a.mp3", "/abs/b.wav"], "tags": [["rock", "live"], []], "year": [1999, None]})
    pq.write_table(table, tmp_path / "m.parquet")
    parquet = list(iter_sources(str(tmp_path / "m.parquet")))
    assert [s.uri for s in parquet] == ["http://h/a.mp3", "/abs/b.wav"]
    assert parquet[0].meta == {"tags": ["rock", "live"], "year": 1999} and parquet[0].text == ()
    (tmp_path / "bad.jsonl").write_text('{"title": "no path column"}\n')
    assert list(iter_sources(str(tmp_path / "bad.jsonl")))[0].error
    (tmp_path / "nopath.csv").write_text("title\nX\n")
    with pytest.raises(UserError, match="path or url"):
        list(iter_sources(str(tmp_path / "nopath.csv")))


def test_http_fetch_reasons(http_server):
    base_url, handler = http_server
    handler.files["/unit.wav"] = b"RIFF-data"
    handler.flaky_ok.clear()
    settings = FetchSettings(max_bytes=1 << 20, timeout_s=0.3, retries=1, backoff_s=0.01)
    assert fetch(f"{base_url}/unit.wav", settings) == b"RIFF-data"
    for path, reason in (("/nope.wav", "missing"), ("/slow.wav", "timeout"), ("/big.wav", "too_large"),
                         ("/flaky.wav", "fetch_error")):
        with pytest.raises(FetchError) as err:
            fetch(base_url + path, settings)
        assert err.value.reason == reason, path
    with pytest.raises(FetchError) as err:
        fetch("nosuchscheme://host/x.wav", settings)
    assert err.value.reason == "unsupported_scheme"


def test_duplicates_prefer_committed_then_smallest_id():
    group = ("h", [("b", "train-000001", False), ("a", "valid-000000", False), ("c", "test-000000", False)])
    assert sorted(pick_duplicates(group)) == [("test-000000", ("c", "a")), ("train-000001", ("b", "a"))]
    committed = ("h", [("b", "train-000000", True), ("a", "train-000009", False)])
    assert list(pick_duplicates(committed)) == [("train-000009", ("a", "b"))]
    assert list(pick_duplicates(("h", [("a", "train-000000", False)]))) == []


def _tarfile_archive(members: list[tuple[str, bytes]]) -> bytes:
    """The reference: the same members written by the tarfile module."""
    handle = io.BytesIO()
    with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            tar.addfile(tar_member(name, len(data)), io.BytesIO(data))
    return handle.getvalue()


def test_assembled_tars_equal_tarfile_output():
    flac = audio.encode_flac(music(0.2, 8000, 1, 1), 8000)
    samples = [(f"{i:016x}_0000", {"json": b'{"k": %d}' % i, "flac": flac[: 100 + 37 * i]}) for i in range(3)]
    staged = [sample_bytes(key, files) for key, files in samples]
    for keep in ([0, 1, 2], [0, 2], []):  # all, one source left out as a duplicate, none (an empty shard)
        handle = io.BytesIO()
        tar = TarAssembler(handle)
        for i in keep:
            tar.write(staged[i])
        stats = tar.close()
        expected = _tarfile_archive([(f"{samples[i][0]}.{ext}", samples[i][1][ext]) for i in keep
                                     for ext in ("flac", "json")])
        assert handle.getvalue() == expected and stats["bytes"] == len(expected)
    with tarfile.open(fileobj=io.BytesIO(expected or _tarfile_archive([]))) as archive:
        assert archive.getmembers() == []
    with tarfile.open(fileobj=io.BytesIO(_tarfile_archive([("a.json", b"{}")]))) as archive:
        assert {(m.mtime, m.uid, m.uname, m.mode) for m in archive} == {(946684800, 0, "", 0o444)}


def test_chunks_cover_shards_in_order():
    sizes = {"train-000000": 37, "train-000001": 5, "valid-000000": 1}
    assert chunk_size(43, workers=2, per_shard=37) == 2 and chunk_size(10**6, 2, 37) == 37
    assert chunk_size(3, workers=64, per_shard=37) == 1
    chunks = plan_chunks(sizes, 2)
    for shard, n in sizes.items():
        bounds = [parse_chunk_name(c)[1:] for c in chunks if parse_chunk_name(c)[0] == shard]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert len(chunks) >= 16 and max(parse_chunk_name(c)[2] - parse_chunk_name(c)[1] for c in chunks) == 2
    assert plan_chunks({"train-000000": 3}, 1) == [f"train-000000_00000{i}-00000{i + 1}" for i in range(3)]


def test_cli_user_errors_and_dry_run(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    audio.write(src / "a.wav", music(1.0, 8000, 1, 0), 8000)
    out = tmp_path / "out"
    assert main(["build", "--input", str(src), "--output", str(out), "--clip-secs", "2"]) == 2
    assert "--clip-secs" in capsys.readouterr().err
    assert main(["build", "--input", str(src), "--output", str(out), "--split", "train=2"]) == 2
    assert main(["build", "--input", str(tmp_path / "nothing"), "--output", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["build", "--input", str(src), "--output", str(out), "--dry-run", "--sources-per-shard", "1"]) == 0
    printed = capsys.readouterr().out
    assert "plan: 1 sources in 1 shards" in printed and json.loads(printed[: printed.rindex("}") + 1])["dry_run"]
    assert not out.exists()
