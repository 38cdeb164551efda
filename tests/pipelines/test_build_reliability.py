"""``n2m build`` against hostile inputs and outputs (issue 14, the build-side items): decoders that disagree, odd
files in listings, manifests JSON cannot hold, stale shards, a second build into one OUT, slow servers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from build_helpers import OUT_SR, build, music, ogg_page_bytes, ogg_pages, with_page_gap

from n2m import audio
from n2m.cli import main
from n2m.pipelines.clips import ClipSettings
from n2m.pipelines.fetch import FetchError, FetchSettings, fetch
from n2m.pipelines.sources import ListingStats, iter_sources
from n2m.schema import source_id

IN_MEMORY = "--direct_running_mode=in_memory"


def _sources(out: Path) -> dict[str, dict]:
    return {row["source_uri"]: row for row in pq.read_table(out / "sources.parquet").to_pylist()}


def _strict_json(data: bytes) -> dict:
    """JSON as the standard defines it: NaN and Infinity are not JSON (RFC 8259 section 6)."""
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(data, parse_constant=refuse)


@pytest.fixture(scope="module")
def noise_ogg() -> tuple[bytes, int, int]:
    """(Ogg Vorbis bytes, sample rate, frames): 4 s of noise, so that every page carries audio."""
    sr = 22050
    x = (0.2 * np.random.default_rng(0).standard_normal((1, 4 * sr))).astype(np.float32)
    return audio.encode(x, sr, "OGG"), sr, x.shape[1]


# ---------------------------------------------------------------------------------------------------------------------
# Item 0: a whole file that libsndfile decodes short is not truncated


def test_ogg_page_gap_is_decoded_whole_by_the_second_decoder(noise_ogg):
    ogg, sr, frames = noise_ogg
    reference = audio.decode(ogg)  # the untouched stream, libsndfile
    assert reference.decoder == "soundfile:ogg" and reference.samples.shape == (1, frames)
    gapped = with_page_gap(ogg, 4)
    decoded = audio.decode(gapped)
    assert decoded.samples.shape == (1, frames)  # the end granule position, reached by FFmpeg
    assert np.max(np.abs(decoded.samples - reference.samples)) < 1e-4  # the same audio, no skipped block
    assert decoded.decoder == "pyav:ogg" and "soundfile:ogg" in decoded.note and "gap" in decoded.note


def test_ogg_cut_or_missing_a_page_stays_truncated(noise_ogg):
    ogg, _, _ = noise_ogg
    gapped = with_page_gap(ogg, 4)
    pages = ogg_pages(ogg)
    missing = b"".join(ogg_page_bytes(p) for i, p in enumerate(pages) if i != 4)  # audio really lost
    for data in (gapped[: len(gapped) // 2], missing):
        with pytest.raises(audio.AudioError) as caught:
            audio.decode(data)
        assert caught.value.reason == "truncated"


# ---------------------------------------------------------------------------------------------------------------------
# Items 0 and 14 through a whole build: a Parquet manifest with every value JSON cannot hold


@pytest.fixture(scope="module")
def manifest_build(tmp_path_factory, noise_ogg) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("manifest")
    ogg, _, _ = noise_ogg
    (root / "gap.ogg").write_bytes(with_page_gap(ogg, 4))
    audio.write(root / "twice.wav", music(2.5, 16000, 1, seed=40), 16000)
    audio.write(root / "bytes.wav", music(2.5, 16000, 1, seed=41), 16000)
    table = pa.table({
        "path": ["gap.ogg", "twice.wav", "bytes.wav", "twice.wav"],
        "caption": [b"noise with a page gap", b"first caption", "caf\u00e9 in bytes".encode(), b"second caption"],
        "bpm": [float("nan"), 120.0, float("inf"), 90.0],
    })
    pq.write_table(table, root / "manifest.parquet")
    out = root / "out"
    assert build(root / "manifest.parquet", out, IN_MEMORY, "--split", "train=1") == 0
    return out, {name: str(root / name) for name in ("gap.ogg", "twice.wav", "bytes.wav")}


def test_build_keeps_ffmpeg_decode_and_records_the_shortfall(manifest_build):
    out, uri = manifest_build
    row = _sources(out)[uri["gap.ogg"]]
    assert (row["status"], row["reason"], row["clips"], row["decoder"]) == ("ok", "", 2, "pyav:ogg")
    assert "decoded by pyav:ogg" in row["message"] and "soundfile:ogg" in row["message"]


def test_manifest_nan_and_infinity_become_null_and_are_noted(manifest_build):
    out, uri = manifest_build
    samples = list(wds.WebDataset([str(p) for p in (out / "shards").rglob("*.tar")], shardshuffle=False))
    metas = {m["source_uri"]: m for m in (_strict_json(s["json"]) for s in samples)}
    assert metas[uri["gap.ogg"]]["meta"]["bpm"] is None and metas[uri["bytes.wav"]]["meta"]["bpm"] is None
    rows = _sources(out)
    assert "'bpm' was nan: stored as null" in rows[uri["gap.ogg"]]["message"]
    assert "'bpm' was inf: stored as null" in rows[uri["bytes.wav"]]["message"]
    assert _strict_json(rows[uri["bytes.wav"]]["meta_json"].encode())["bpm"] is None


def test_bytes_captions_and_repeated_rows(manifest_build):
    out, uri = manifest_build
    samples = list(wds.WebDataset([str(p) for p in (out / "shards").rglob("*.tar")], shardshuffle=False))
    texts = {m["source_uri"]: m["text"] for m in (_strict_json(s["json"]) for s in samples)}
    assert texts[uri["bytes.wav"]] == ["caf\u00e9 in bytes"] and texts[uri["gap.ogg"]] == ["noise with a page gap"]
    assert texts[uri["twice.wav"]] == ["first caption"]  # the first row wins
    rows = _sources(out)
    assert len(rows) == 3 and "listed 1 more time with other captions" in rows[uri["twice.wav"]]["message"]
    listing = json.loads((out / "build.json").read_text())["listing"]
    assert listing["repeated_uris"] == 1 and listing["conflicts"] == {source_id(uri["twice.wav"]): 1}


def test_manifest_long_fields_and_repeated_columns(tmp_path):
    lyrics = "la " * 60000  # 180000 characters: more than the csv module's default field limit of 131072
    (tmp_path / "long.csv").write_text(f"path,caption\na.wav,{lyrics}\nb.wav,short\n")
    rows = list(iter_sources(str(tmp_path / "long.csv")))
    assert [r.text for r in rows] == [(lyrics.strip(),), ("short",)] and not any(r.error for r in rows)
    (tmp_path / "two.csv").write_text("path,title,path\na.wav,A,b.wav\n")
    with pytest.raises(Exception, match="'path' more than once"):
        list(iter_sources(str(tmp_path / "two.csv")))
    pq.write_table(pa.Table.from_arrays([pa.array(["a.wav"]), pa.array(["b.wav"])], names=["url", "url"]),
                   tmp_path / "two.parquet")
    with pytest.raises(Exception, match="'url' more than once"):
        list(iter_sources(str(tmp_path / "two.parquet")))
    (tmp_path / "two.jsonl").write_text('{"path": "a.wav", "path": "b.wav"}\n{"path": "c.wav"}\n')
    first, second = iter_sources(str(tmp_path / "two.jsonl"))
    assert "'path'" in first.error and second.uri == str(tmp_path / "c.wav")


def test_manifest_rows_that_are_not_utf8_fail_alone_and_unreadable_manifests_are_one_line_errors(tmp_path, capsys):
    for name, text, line in (("latin.csv", b"path,caption\na.wav,caf\xe9\nb.wav,ok\n", 2),  # line 1: the header
                             ("latin.jsonl", b'{"path": "a.wav", "caption": "caf\xe9"}\n{"path": "b.wav"}\n', 1)):
        (tmp_path / name).write_bytes(text)
        first, second = iter_sources(str(tmp_path / name))
        assert first.error == "not UTF-8 text (byte 0xe9)" and first.uri.endswith(f"{name}#line={line}"), first
        assert second.uri == str(tmp_path / "b.wav") and not second.error
    (tmp_path / "header.csv").write_bytes(b"path,l\xe9gende\na.wav,x\n")
    (tmp_path / "text.parquet").write_text("not a Parquet file\n")
    (tmp_path / "empty.csv").write_text("path,caption\n")
    for name, needle in (("header.csv", "header is not UTF-8 text (byte 0xe9)"), ("text.parquet", "not a Parquet file"),
                         ("empty.csv", "lists no sources")):
        assert main(["build", "--input", str(tmp_path / name), "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert "--extensions" not in err  # a manifest skips nothing by extension: no hint about it


# ---------------------------------------------------------------------------------------------------------------------
# Items 7 and 9: entries a listing cannot use become failed sources; the listing and the build go on


@pytest.fixture()
def hostile_folder(tmp_path) -> Path:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    audio.write(root / "good.wav", music(2.5, 16000, 1, seed=50), 16000)
    (root / "self.wav").symlink_to("self.wav")  # ELOOP
    (root / "ping.flac").symlink_to("pong.flac")
    (root / "pong.flac").symlink_to("ping.flac")
    (root / "sub" / "up").symlink_to("..")  # a folder cycle, no ELOOP until the path is 40 links deep
    os.mkfifo(root / "fifo.wav")
    (root / "caf\udce9.wav").write_bytes(b"latin-1 name")  # the byte 0xE9: not UTF-8
    return root


@pytest.mark.timeout(60)
def test_listing_records_unusable_entries_and_goes_on(hostile_folder):
    root = hostile_folder
    found = {s.uri: s for s in iter_sources(str(root), stats=ListingStats())}
    good = str(root / "good.wav")
    assert found[good].error == ""
    reasons = {uri: s.reason for uri, s in found.items() if uri != good}
    assert reasons == {
        str(root / "caf\\xe9.wav"): "bad_file_name",
        str(root / "fifo.wav"): "not_a_file",
        str(root / "ping.flac"): "symlink_loop",
        str(root / "pong.flac"): "symlink_loop",
        str(root / "self.wav"): "symlink_loop",
        str(root / "sub" / "up"): "symlink_loop",
    }
    assert all(s.error for uri, s in found.items() if uri != good)


@pytest.mark.timeout(60)
def test_build_of_a_hostile_folder_records_failures_and_succeeds(hostile_folder, tmp_path):
    out = tmp_path / "out"
    assert build(hostile_folder, out, IN_MEMORY, "--split", "train=1") == 0
    rows = _sources(out)
    assert rows[str(hostile_folder / "good.wav")]["status"] == "ok"
    failed = {uri: row["reason"] for uri, row in rows.items() if row["status"] == "failed"}
    assert sorted(failed.values()) == ["bad_file_name", "not_a_file", "symlink_loop", "symlink_loop", "symlink_loop",
                                       "symlink_loop"]


@pytest.mark.timeout(60)
def test_manifest_paths_to_devices_and_fifos_fail_as_not_a_file(tmp_path):
    os.mkfifo(tmp_path / "fifo.wav")
    (tmp_path / "m.csv").write_text(f"path\n{tmp_path / 'fifo.wav'}\n/dev/zero\n")
    settings = FetchSettings(max_bytes=1 << 20)
    for source in iter_sources(str(tmp_path / "m.csv")):
        with pytest.raises(audio.AudioError) as caught:
            fetch(source.uri, settings)
        assert caught.value.reason == "not_a_file", source.uri
    os.mkfifo(tmp_path / "fifo.csv")
    assert main(["build", "--input", str(tmp_path / "fifo.csv"), "--output", str(tmp_path / "out")]) == 2


# ---------------------------------------------------------------------------------------------------------------------
# Item 6: a total deadline per source


def test_trickling_server_is_cut_by_the_fetch_deadline(http_server):
    base_url, _ = http_server
    settings = FetchSettings(max_bytes=1 << 20, timeout_s=0.3, retries=1, backoff_s=0.05, deadline_s=0.5)
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch(f"{base_url}/trickle.wav", settings)  # 200 bytes at one per 20 ms: 4 s without a deadline
    assert caught.value.reason == "timeout" and "--fetch-deadline" in str(caught.value)
    assert time.monotonic() - started < 0.5 + 0.3 + 0.5  # the deadline, at most one per-read timeout, slack


# ---------------------------------------------------------------------------------------------------------------------
# Item 5: clip settings are checked in frames


@pytest.mark.timeout(60)
def test_clip_settings_under_one_frame_are_refused(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    audio.write(src / "a.wav", music(2.5, 16000, 1, seed=60), 16000)
    for flag, value in (("--hop-seconds", "0.00001"), ("--clip-seconds", "0.00001")):
        code = build(src, tmp_path / "out", IN_MEMORY, flag, value, "--min-clip-seconds", "0.00001")
        assert code == 2 and "less than one frame" in capsys.readouterr().err
    with pytest.raises(ValueError, match="one frame"):
        ClipSettings(sample_rate=OUT_SR, clip_s=2.0, hop_s=1e-5, min_clip_s=1.0)


# ---------------------------------------------------------------------------------------------------------------------
# Item 8: every number the build takes is checked before any work (NaN, infinity, out of range)


def _exit_code(argv: list[str]) -> int:
    """The CLI's exit code: a bad flag value exits while parsing, any other user error returns 2."""
    try:
        return main(argv)
    except SystemExit as done:
        return done.code


@pytest.mark.parametrize(("flag", "value"), [
    ("--clip-seconds", "inf"), ("--hop-seconds", "nan"), ("--min-clip-seconds", "-1"), ("--silence-db", "nan"),
    ("--max-source-mb", "inf"), ("--max-source-seconds", "nan"), ("--shard-size-mb", "inf"),
    ("--typical-source-seconds", "0"), ("--sources-per-shard", "0"), ("--fetch-timeout", "nan"),
    ("--fetch-deadline", "inf"), ("--fetch-retries", "-1"), ("--fetch-backoff", "inf"), ("--fetch-concurrency", "0"),
    ("--decode-threads", "1.5"), ("--max-failure-rate", "nan"), ("--sample-rate", "100000000000"), ("--channels", "0"),
])
def test_build_numbers_out_of_range_are_one_line_errors(tmp_path, capsys, flag, value):
    src = tmp_path / "a.wav"
    audio.write(src, music(1.0, 16000, 1, seed=90), 16000)
    assert _exit_code(["build", "--input", str(src), "--output", str(tmp_path / "out"), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"n2m build: error: argument {flag}: expected"), err
    assert not (tmp_path / "out").exists()


def test_build_config_values_get_the_same_number_checks(tmp_path, capsys):
    (tmp_path / "build.yaml").write_text("silence_db: .nan\n")
    argv = ["build", "--config", str(tmp_path / "build.yaml"), "--input", str(tmp_path), "--output",
            str(tmp_path / "out"), "--dry-run"]
    assert _exit_code(argv) == 2
    assert "silence_db: expected a finite number, got 'nan'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# Item 11: an existing path is never a glob, and zero sources is an error


def test_existing_path_with_glob_characters_and_empty_inputs(tmp_path, capsys):
    odd = tmp_path / "dir_[x]"
    odd.mkdir()
    audio.write(odd / "a.wav", music(2.5, 16000, 1, seed=70), 16000)
    assert build(odd, tmp_path / "out", "--dry-run") == 0
    assert "plan: 1 sources" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "cover.jpg").write_bytes(b"jpeg")
    for src in (tmp_path / "empty", tmp_path / "nothing_*.wav"):
        assert build(src, tmp_path / "out2") == 2
        assert "lists no sources" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Items 1 and 10: what a new build must not keep


def _folder(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        audio.write(root / name, music(2.5, 16000, 1, seed=80 + i), 16000)
    return root


def test_overwrite_deletes_label_sets_and_embedding_caches(tmp_path, capsys):
    src, out = _folder(tmp_path / "src", ["a.wav", "b.wav"]), tmp_path / "out"
    assert build(src, out, IN_MEMORY) == 0
    (out / "labels" / "v1").mkdir(parents=True)
    (out / "labels" / "v1" / "manifest.json").write_text("{}")
    (out / "embeddings" / "0123456789abcdef").mkdir(parents=True)
    (out / "embeddings" / "0123456789abcdef" / "train-000000.npz").write_bytes(b"stale")
    capsys.readouterr()
    assert build(src, out, IN_MEMORY, "--overwrite") == 0
    assert not (out / "labels").exists() and not (out / "embeddings").exists()
    assert "labels/v1" in capsys.readouterr().out and (out / "index.parquet").exists()


def test_shards_of_deleted_inputs_are_refused_or_pruned(tmp_path, capsys):
    src, out = _folder(tmp_path / "src", ["a.wav", "b.wav", "c.wav"]), tmp_path / "out"
    flags = (IN_MEMORY, "--split", "train=1", "--sources-per-shard", "1")
    assert build(src, out, *flags) == 0
    (src / "c.wav").unlink()  # the last shard's only source: the listing no longer produces that shard
    capsys.readouterr()
    assert build(src, out, *flags) == 2
    assert "--prune" in capsys.readouterr().err
    (src / "a.wav").unlink()  # now the remaining shard holds another source than its committed spec
    assert build(src, out, *flags, "--prune") == 0
    assert set(_sources(out)) == {str(src / "b.wav")}
    assert sorted(p.name for p in (out / "shards" / "train").iterdir()) == ["train-000000.json", "train-000000.tar"]
    keys = {s["__key__"] for s in wds.WebDataset(str(out / "shards" / "train" / "train-000000.tar"), shardshuffle=False)}
    assert keys == {f"{source_id(str(src / 'b.wav'))}_0000"}
    assert json.loads((out / "build.json").read_text())["counts"]["sources"] == 1


# ---------------------------------------------------------------------------------------------------------------------
# Item 14: output folders that cannot be used, and one build at a time


def test_output_that_is_a_file_or_not_writable_is_refused(tmp_path, capsys):
    src = _folder(tmp_path / "src", ["a.wav"])
    (tmp_path / "file").write_text("not a folder")
    assert build(src, tmp_path / "file", IN_MEMORY) == 2
    assert "is a file" in capsys.readouterr().err
    assert build(src, tmp_path / "file" / "out", IN_MEMORY) == 2
    assert "cannot write" in capsys.readouterr().err
    locked = tmp_path / "read_only"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root ignores permission bits
        pytest.skip("permission bits do not stop this user")
    assert build(src, locked / "out", IN_MEMORY) == 2
    assert "cannot write" in capsys.readouterr().err


def test_a_live_lock_refuses_a_second_build_and_a_dead_one_is_taken_over(tmp_path, capsys):
    src, out = _folder(tmp_path / "src", ["a.wav"]), tmp_path / "out"
    out.mkdir()
    lock = out / "build.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "earlier"}))
    assert build(src, out, IN_MEMORY) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and str(lock) in err and not (out / "shards").exists()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid of this host that has exited: a build killed with SIGKILL leaves such a lock
    lock.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "started": "earlier"}))
    assert build(src, out, IN_MEMORY) == 0
    assert not lock.exists() and (out / "index.parquet").exists()
